"""History -> chat messages -> a token budget -> the model's own chat template.

With a tokenizer the prompt is rendered and counted exactly. Without one (a remote engine whose
model's tokenizer could not be loaded) it is trimmed by an estimate of 3 characters a token and
has no token ids: a chat-completions server takes the messages and renders them itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.types import ChatError, ChatMessage

# Only for tokenizers without a chat template; the model's own template is always preferred.
_FALLBACK_TAGS = {"system": "System", "user": "User", "assistant": "Assistant"}

# The estimate without a tokenizer. BPE vocabularies of current models average about 4
# characters a token on English text and fewer on code and other scripts: 3 errs on the side of
# dropping a turn too many rather than overflowing the server's context.
CHARS_PER_TOKEN = 3
# What a chat template adds around each message (role tags, separators), estimated.
_TOKENS_PER_MESSAGE = 4
_GENERATION_PROMPT_TOKENS = 4
# Without a tokenizer the control tokens are unknown; these spellings cover the common families
# (DeepSeek's `<｜User｜>`, ChatML's `<|im_start|>`, Llama 3's `<|eot_id|>`).
_CONTROL_LIKE = re.compile(r"<(?=[|｜])")

PromptMessage = ChatMessage  # history comes in as the chat messages it is made of


@dataclass(frozen=True, slots=True)
class Prompt:
    token_ids: tuple[int, ...]  # the rendered template; empty when no tokenizer is loaded
    max_new_tokens: int  # what is left of the context for the answer
    num_dropped_messages: int  # oldest history messages left out to fit the budget
    opens_reasoning: bool  # the template already opened <think>: the output starts inside it
    # The same trimmed dialogue for a chat-completions server: system prompt first, earlier
    # answers without their reasoning, control tokens made inert.
    messages: tuple[ChatMessage, ...] = ()
    num_tokens: int = 0  # len(token_ids), or the estimate when there are no token ids


class PromptTooLong(ChatError):
    """Even the newest message alone does not fit the context."""


class PromptBuilder:
    """Renders a dialogue with the tokenizer's chat template, dropping the oldest turns to fit.

    `tokenizer=None` trims by an estimate (CHARS_PER_TOKEN) and assumes a template that opens
    `<think>` (DeepSeek-R1's): that is what this bot serves.
    """

    def __init__(
        self, tokenizer: Any | None, *, max_context_tokens: int, max_new_tokens: int
    ) -> None:
        self._tokenizer = tokenizer
        self._max_context = max_context_tokens
        self._max_new = max_new_tokens
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
        # Control tokens (role tags, BOS/EOS, tool and FIM markers) that a user could type to fake
        # turns of the dialogue; the reasoning tags are harmless inside a user's text.
        added = getattr(tokenizer, "get_added_vocab", dict)()
        self._control_tokens = sorted(
            (t for t in added if t not in ("<think>", "</think>") and len(t) > 1),
            key=len,
            reverse=True,
        )

    @property
    def max_context_tokens(self) -> int:
        return self._max_context

    @property
    def is_estimated(self) -> bool:
        """True when token counts are estimates (no tokenizer)."""
        return self._tokenizer is None

    def build(self, system: str, history: Sequence[ChatMessage], user_text: str) -> Prompt:
        """The prompt for answering `user_text` after `history` (oldest first)."""
        # Keep room for a long answer (reasoning runs to thousands of tokens), but never let the
        # answer reservation take more than half the context.
        reserve = min(self._max_new, self._max_context // 2)
        budget = self._max_context - reserve
        turns = _group_turns(history)
        newest = ChatMessage("user", user_text)

        def render(num_dropped_turns: int) -> tuple[list[ChatMessage], tuple[int, ...], int]:
            kept = [m for turn in turns[num_dropped_turns:] for m in turn]
            chat = self._chat(system, [*kept, newest])
            ids, length = self._measure(chat)
            return chat, ids, length

        chat, ids, length = render(len(turns))
        if length > budget:
            raise PromptTooLong(
                f"Your message is too long for the model: it takes {length} tokens with the "
                f"system prompt, and at most {budget} fit. Please shorten it."
            )
        # The fewest dropped turns that fit: binary search, since each render is a full encode.
        low, high = 0, len(turns)
        best = chat, ids, length
        while low < high:
            middle = (low + high) // 2
            candidate = render(middle)
            if candidate[2] <= budget:
                high, best = middle, candidate
            else:
                low = middle + 1
        chat, ids, length = best
        return Prompt(
            token_ids=ids,
            max_new_tokens=min(self._max_new, self._max_context - length),
            num_dropped_messages=sum(len(turn) for turn in turns[:low]),
            opens_reasoning=self._opens_reasoning(ids),
            messages=tuple(chat),
            num_tokens=length,
        )

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return _estimate(text)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat(self, system: str, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages as sent: system first, control tokens inert, no earlier reasoning."""
        chat = [ChatMessage("system", self._inert(system))] if system else []
        for message in messages:
            content = self._inert(message.content)
            if message.role == "assistant":
                content = _without_reasoning(content)
            chat.append(ChatMessage(message.role, content))
        return chat

    def _measure(self, chat: Sequence[ChatMessage]) -> tuple[tuple[int, ...], int]:
        """The rendered token ids and their number (estimated, with no ids, without tokenizer)."""
        if self._tokenizer is None:
            length = _GENERATION_PROMPT_TOKENS + sum(
                _TOKENS_PER_MESSAGE + _estimate(m.content) for m in chat
            )
            return (), length
        if self._has_template:
            text = self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in chat],
                add_generation_prompt=True,
                tokenize=False,
            )
            # The template writes the BOS token itself.
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = "".join(f"{_FALLBACK_TAGS[m.role]}: {_fallback_text(m)}\n\n" for m in chat)
            ids = self._tokenizer(text + "Assistant:", add_special_tokens=True)["input_ids"]
        return tuple(ids), len(ids)

    def _inert(self, text: str) -> str:
        """`text` with control-token strings broken up, so they tokenize as plain text."""
        if self._tokenizer is None:
            return _CONTROL_LIKE.sub("<\u200b", text)
        for token in self._control_tokens:
            if token in text:
                text = text.replace(token, token[0] + "\u200b" + token[1:])
        return text

    def _opens_reasoning(self, ids: Sequence[int]) -> bool:
        if self._tokenizer is None:
            return True
        tail = self._tokenizer.decode(list(ids[-4:]), skip_special_tokens=False)
        return tail.rstrip().endswith("<think>")


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _without_reasoning(content: str) -> str:
    """An earlier reply's text without its reasoning: what follows its </think>, as R1's own
    template cuts it (so rendering these messages with it changes nothing)."""
    return content.split("</think>")[-1]


def _fallback_text(message: ChatMessage) -> str:
    return message.content.lstrip() if message.role == "assistant" else message.content


def _group_turns(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Split history into turns that start at a user message, so trimming never orphans a reply."""
    turns: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns
