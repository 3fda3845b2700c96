"""One reply's state -> the texts of its messages, for Telegram (HTML) or Discord (Markdown)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.render.discord_text import discord_quote, discord_quote_length, escape_discord_markdown
from bot.render.math import render_math
from bot.render.split import close_open_fence, split_markdown, tail_markdown, utf16_length
from bot.render.telegram_html import escape_html, markdown_to_telegram_html, telegram_visible_length

ReasoningMode = Literal["hidden", "collapsed", "full"]

TELEGRAM_LIMIT = 4096
DISCORD_LIMIT = 2000
MARKER = " ▌"  # "still writing"
TRIMMED_NOTE = "… (earlier reasoning trimmed)"
MAX_STATUS = 90
# Room kept free in every message for the status line and the marker, so the answer splits
# at the same places while streaming and at the end (earlier messages do not change).
TAIL_RESERVE = MAX_STATUS + 10
MIN_LIMIT = 4 * TAIL_RESERVE


@dataclass(frozen=True, slots=True)
class ReplyView:
    """What one reply shows at a moment."""

    reasoning: str = ""
    answer: str = ""
    status: str | None = None  # e.g. "💭 Thinking… 12 s"; shown only while not final
    note: str | None = None  # ending note, shown only when final
    is_final: bool = False


class Layout(Protocol):
    """Turns a ReplyView into message texts for one platform."""

    limit: int

    def render(self, view: ReplyView) -> list[str]: ...


class LayoutError(Exception):
    """The text cannot be fitted into messages of this size (a limit far too small)."""


def _clip(text: str, size: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


class _BaseLayout:
    """The platform-independent part: which text goes into which message."""

    limit: int
    split_slack = (
        0  # room kept for markup a piece may gain when rendered (Discord: a closing fence)
    )

    def __init__(self, mode: ReasoningMode, *, limit: int) -> None:
        if mode not in ("hidden", "collapsed", "full"):
            raise ValueError(f"unknown reasoning mode {mode!r}")
        if limit < MIN_LIMIT:
            raise ValueError(f"message limit must be at least {MIN_LIMIT}, got {limit}")
        self.mode = mode
        self.limit = limit
        # One layout serves one reply and re-renders it often: most pieces repeat.
        self._memo: dict[tuple[str, bool, str], str] = {}

    # Platform hooks -------------------------------------------------------------------------

    def measure(self, rendered: str) -> int:
        raise NotImplementedError

    def answer_piece(self, markdown: str) -> str:
        raise NotImplementedError

    def reasoning_block(self, markdown: str, *, trimmed: bool) -> str:
        raise NotImplementedError

    def reasoning_measure(self, markdown: str) -> int:
        raise NotImplementedError

    def status_line(self, text: str) -> str:
        raise NotImplementedError

    def with_marker(self, rendered: str) -> str:
        return rendered + MARKER

    def _math(self, markdown: str, *, is_complete: bool) -> str:
        return self._memoized(
            "math", is_complete, markdown, lambda md: render_math(md, is_complete=is_complete)
        ).strip()

    def _answer_piece(self, markdown: str) -> str:
        return self._memoized("answer", False, markdown, self.answer_piece)

    def _reasoning_block(self, markdown: str, *, trimmed: bool) -> str:
        return self._memoized(
            "reasoning", trimmed, markdown, lambda md: self.reasoning_block(md, trimmed=trimmed)
        )

    def _memoized(self, kind: str, flag: bool, markdown: str, render: Callable[[str], str]) -> str:
        key = (kind, flag, markdown)
        if key not in self._memo:
            if len(self._memo) >= 64:
                self._memo.clear()
            self._memo[key] = render(markdown)
        return self._memo[key]

    # Layout ---------------------------------------------------------------------------------

    def render(self, view: ReplyView) -> list[str]:
        """The message texts for `view`; every one within the limit, none empty."""
        content = self.limit - TAIL_RESERVE
        # LaTeX becomes Unicode before the Markdown is split and rendered. While streaming, a
        # formula not yet closed is held back, so what is shown only grows (no jumping text).
        reasoning = self._math(view.reasoning.strip(), is_complete=view.is_final)
        answer = self._math(view.answer.strip(), is_complete=view.is_final)
        if self.mode == "hidden" or not reasoning:
            messages = self._answer(answer, content, content)
        elif self.mode == "collapsed":
            messages = self._collapsed(reasoning, answer, content)
        else:
            messages = self._full(reasoning, answer, content)
        if not view.is_final and view.status:
            self._append(messages, self.status_line(_clip(view.status, MAX_STATUS)), "\n")
        if view.is_final and view.note:
            self._append(messages, self.status_line(_clip(view.note, content)), "\n\n")
        if not messages:
            messages = [self.status_line("…")]
        if not view.is_final:
            messages[-1] = self.with_marker(messages[-1])
        return messages

    def _append(self, messages: list[str], line: str, separator: str) -> None:
        if messages and self.measure(messages[-1] + separator + line) <= self.limit - len(MARKER):
            messages[-1] += separator + line
        else:
            messages.append(line)

    def _answer(self, answer: str, first_limit: int, limit: int) -> list[str]:
        return self._fit(answer, first_limit, limit, self._answer_piece, utf16_length)

    def _collapsed(self, reasoning: str, answer: str, content: int) -> list[str]:
        """Reasoning as one (trimmed) block above the answer in the first message."""
        if not answer:
            return [self._reasoning_tail(reasoning, content)]
        whole = self._reasoning_block(reasoning, trimmed=False)
        # Sized by its Markdown, which only grows while streaming (its rendering may shrink
        # when a link or bold closes), so the split moves only forward.
        needed = utf16_length(answer) + self.split_slack
        if self.measure(whole) + 1 + needed <= content:
            single = whole + "\n" + self._answer_piece(answer)
            if self.measure(single) <= content:
                return [single]
        # The answer takes what it needs; the reasoning keeps at least a third of the message.
        block = self._reasoning_tail(reasoning, max(content // 3, content - 1 - needed))
        messages = self._answer(answer, content - self.measure(block) - 1, content)
        messages[0] = block + "\n" + messages[0]
        return messages

    def _full(self, reasoning: str, answer: str, content: int) -> list[str]:
        """All reasoning as quoted messages; the answer starts below it if there is room."""
        messages = self._fit(
            reasoning,
            content,
            content,
            lambda piece: self._reasoning_block(piece, trimmed=False),
            self.reasoning_measure,
        )
        if not answer:
            return messages
        room = content - self.measure(messages[-1]) - 1
        if room < content // 4:
            return messages + self._answer(answer, content, content)
        rest = self._answer(answer, room, content)
        messages[-1] += "\n" + rest[0]
        return messages + rest[1:]

    def _reasoning_tail(self, reasoning: str, budget: int) -> str:
        """A reasoning block within `budget`: the end of the reasoning, trimmed from the front."""
        # Markdown over twice the budget is taken not to fit: rendering it all would be waste.
        if utf16_length(reasoning) <= 2 * budget:
            whole = self._reasoning_block(reasoning, trimmed=False)
            if self.measure(whole) <= budget:
                return whole
        room = budget - self.measure(self._reasoning_block("", trimmed=True))
        while room >= 16:
            tail, _ = tail_markdown(reasoning, room, measure=self.reasoning_measure)
            block = self._reasoning_block(tail, trimmed=True)
            over = self.measure(block) - budget
            if over <= 0:
                return block
            room -= over + 8
        raise LayoutError(f"no room for reasoning in a message of {self.limit}")

    def _fit(
        self,
        markdown: str,
        first_limit: int,
        limit: int,
        render: Callable[[str], str],
        measure: Callable[[str], int],
    ) -> list[str]:
        """Split `markdown` and render each piece; re-split tighter if rendering grew a piece."""
        if not markdown:
            return []
        shrink = self.split_slack
        while first_limit - shrink >= 16:
            pieces = split_markdown(
                markdown, limit - shrink, first_limit=first_limit - shrink, measure=measure
            )
            rendered = [render(piece) for piece in pieces]
            over = max(
                self.measure(text) - (first_limit if i == 0 else limit)
                for i, text in enumerate(rendered)
            )
            if over <= 0:
                return rendered
            shrink += over + 16
        raise LayoutError(f"cannot fit the text into messages of {self.limit}")


class TelegramLayout(_BaseLayout):
    """Telegram HTML: collapsed reasoning is an expandable blockquote above the answer."""

    def __init__(self, mode: ReasoningMode, *, limit: int = TELEGRAM_LIMIT) -> None:
        super().__init__(mode, limit=limit)

    def measure(self, rendered: str) -> int:
        return telegram_visible_length(rendered)

    def answer_piece(self, markdown: str) -> str:
        rendered = markdown_to_telegram_html(markdown)
        # Markdown that renders to nothing (a lone link definition) is shown as typed.
        return rendered if rendered.strip() else escape_html(markdown)

    def reasoning_block(self, markdown: str, *, trimmed: bool) -> str:
        inner = markdown_to_telegram_html(markdown, quoted=True) if markdown else ""
        if markdown and not inner.strip():
            inner = escape_html(markdown)
        if trimmed:
            inner = f"<i>{escape_html(TRIMMED_NOTE)}</i>\n{inner}"
        tag = "<blockquote expandable>" if self.mode == "collapsed" else "<blockquote>"
        return f"{tag}{inner}</blockquote>"

    def reasoning_measure(self, markdown: str) -> int:
        return utf16_length(markdown)

    def status_line(self, text: str) -> str:
        return f"<i>{escape_html(text)}</i>"


class DiscordLayout(_BaseLayout):
    """Discord Markdown (native): reasoning as a quoted block ('> ' lines) above the answer."""

    split_slack = 10  # quote prefix and a closing fence ("\n> ```") a piece may gain

    def __init__(self, mode: ReasoningMode, *, limit: int = DISCORD_LIMIT) -> None:
        super().__init__(mode, limit=limit)

    def measure(self, rendered: str) -> int:
        return utf16_length(rendered)

    def answer_piece(self, markdown: str) -> str:
        return close_open_fence(markdown)

    def reasoning_block(self, markdown: str, *, trimmed: bool) -> str:
        lines = [f"*{TRIMMED_NOTE}*"] if trimmed else []
        if markdown:
            lines.append(close_open_fence(markdown))
        return discord_quote("\n".join(lines))

    def reasoning_measure(self, markdown: str) -> int:
        return discord_quote_length(markdown)

    def status_line(self, text: str) -> str:
        return f"-# {escape_discord_markdown(text)}"

    def with_marker(self, rendered: str) -> str:
        # After a closing fence the marker goes on its own line, or Discord shows the fence.
        return rendered + ("\n▌" if rendered.endswith("```") else MARKER)
