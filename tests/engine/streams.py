"""Reading engine streams in tests: every stream must end with exactly one Finished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import (
    EngineEvent,
    Finished,
    FinishReason,
    GenerationStream,
    Queued,
    Started,
    TextDelta,
)

# Only so that a broken engine fails the test instead of hanging it; never a speed assertion.
HANG_GUARD_SECONDS = 60.0


def chat_prompt(tokenizer: Any, text: str) -> tuple[int, ...]:
    """`text` as one user turn in the model's own chat template (ends with "<think>\\n")."""
    return tuple(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
    )


@dataclass
class Reader:
    """Reads one stream step by step, keeping every event it has seen."""

    stream: GenerationStream
    events: list[EngineEvent] = field(default_factory=list)

    @property
    def is_done(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], Finished)

    async def until(self, predicate: Callable[[EngineEvent], bool]) -> EngineEvent:
        """Read until an event satisfies `predicate`; fails if the stream ends first."""
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            while True:
                assert not self.is_done, f"the stream ended first: {self.events[-1]}"
                event = await anext(self.stream)
                self.events.append(event)
                if predicate(event):
                    return event

    async def until_type(self, kind: type) -> EngineEvent:
        return await self.until(lambda event: isinstance(event, kind))

    async def until_text(self) -> str:
        """Read until some output text has arrived; returns the text so far."""
        await self.until(lambda event: isinstance(event, TextDelta) and bool(event.text))
        return self.text

    async def to_end(self) -> Reader:
        """Read the rest; checks the stream's shape (see check_events)."""
        if not self.is_done:
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                async for event in self.stream:
                    self.events.append(event)
        check_events(self.events)
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            try:
                extra = await anext(self.stream)
            except StopAsyncIteration:
                pass
            else:
                raise AssertionError(f"an event after Finished: {extra}")
        return self

    @property
    def finished(self) -> Finished:
        assert self.is_done, f"not finished: {self.events}"
        return self.events[-1]  # type: ignore[return-value]

    @property
    def reason(self) -> FinishReason:
        return self.finished.reason

    @property
    def text(self) -> str:
        return "".join(event.text for event in self.events if isinstance(event, TextDelta))

    @property
    def positions(self) -> list[int]:
        return [event.position for event in self.events if isinstance(event, Queued)]

    @property
    def has_started(self) -> bool:
        return any(isinstance(event, Started) for event in self.events)


def check_events(events: Sequence[EngineEvent]) -> None:
    """Queued* Started? TextDelta* Finished: exactly one Finished, last; text only after Started."""
    assert events, "no events at all"
    finished = [event for event in events if isinstance(event, Finished)]
    assert len(finished) == 1 and events[-1] is finished[0], events
    kinds = [type(event) for event in events]
    num_started = kinds.count(Started)
    assert num_started <= 1, events
    started_at = kinds.index(Started) if num_started else len(events) - 1
    assert all(kind is Queued for kind in kinds[:started_at]), events
    assert all(kind in (TextDelta, Finished) for kind in kinds[started_at + 1 :]), events
    assert all(event.text for event in events if isinstance(event, TextDelta)), events
    if not num_started:  # ended while waiting: nothing was generated
        assert finished[0].num_generated_tokens == 0, events


async def collect(stream: GenerationStream) -> Reader:
    """Read a whole stream."""
    return await Reader(stream).to_end()
