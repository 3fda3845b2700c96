"""Splits the model's streamed output into reasoning (<think> ... </think>) and answer deltas."""

from __future__ import annotations

from bot.types import AnswerDelta, ReasoningDelta

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

SplitEvent = ReasoningDelta | AnswerDelta


class ReasoningSplitter:
    """Streaming <think> splitter; the result does not depend on how the text is split.

    Reasoning is the text before `</think>`, the answer the text after it; each is stripped of
    leading and trailing whitespace (trailing whitespace is held back until more text follows).
    A `<think>` at the very start (after whitespace) is dropped: the model sometimes opens the
    block although the prompt already did. Without `</think>`, everything stays reasoning.
    """

    def __init__(self, starts_in_reasoning: bool = True) -> None:
        self._is_reasoning = starts_in_reasoning
        self._may_open = True  # nothing but whitespace seen yet: a leading <think> is a tag
        self._is_closed = False  # </think> seen: the rest is answer, tags included
        self._pending = ""  # text that may be (part of) a tag
        self._held_space = ""  # whitespace that is dropped if the section ends right after it
        self._at_section_start = True  # leading whitespace of a section is dropped
        self._events: list[SplitEvent] = []

    def push(self, text: str) -> list[SplitEvent]:
        """Add a text delta; return the reasoning/answer deltas that are certain now."""
        self._pending += text
        self._consume(is_final=False)
        return self._take_events()

    def flush(self) -> list[SplitEvent]:
        """The stream ended: release held-back partial tags as text; drop trailing whitespace."""
        self._consume(is_final=True)
        self._pending = ""
        self._held_space = ""
        return self._take_events()

    def _consume(self, *, is_final: bool) -> None:
        if self._may_open and not self._consume_opening(is_final=is_final):
            return
        if self._is_reasoning and not self._is_closed:
            self._consume_reasoning(is_final=is_final)
        else:
            self._emit(self._pending)
            self._pending = ""

    def _consume_opening(self, *, is_final: bool) -> bool:
        """Drop a leading <think>; False while the start is still undecided."""
        rest = self._pending.lstrip()
        if rest.startswith(OPEN_TAG):
            self._pending = rest[len(OPEN_TAG) :]
            self._is_reasoning = True
        elif not is_final and OPEN_TAG.startswith(rest):
            return False  # only whitespace and maybe the start of <think> so far
        self._may_open = False
        return True

    def _consume_reasoning(self, *, is_final: bool) -> None:
        end = self._pending.find(CLOSE_TAG)
        if end >= 0:
            self._emit(self._pending[:end])
            self._pending = self._pending[end + len(CLOSE_TAG) :]
            self._is_closed = True
            self._is_reasoning = False
            self._held_space = ""  # the reasoning's trailing whitespace
            self._at_section_start = True
            self._emit(self._pending)
            self._pending = ""
            return
        hold = 0 if is_final else _partial_tag_length(self._pending, CLOSE_TAG)
        self._emit(self._pending[: len(self._pending) - hold])
        self._pending = self._pending[len(self._pending) - hold :]

    def _emit(self, text: str) -> None:
        if self._at_section_start:
            text = text.lstrip()
            if not text:
                return
            self._at_section_start = False
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = text[len(body) :]
        if not body:
            return
        kind = ReasoningDelta if self._is_reasoning else AnswerDelta
        if self._events and isinstance(self._events[-1], kind):
            body = self._events.pop().text + body
        self._events.append(kind(body))

    def _take_events(self) -> list[SplitEvent]:
        events, self._events = self._events, []
        return events


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0
