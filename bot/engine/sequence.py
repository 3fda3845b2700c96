"""One request's state in the worker thread, and how each new token becomes stream events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import (
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    Started,
    TextDelta,
)
from bot.engine.detokenizer import IncrementalDetokenizer
from bot.engine.stops import StopMatcher


@dataclass(eq=False)
class Sequence:
    """A request from submit to its Finished event (worker-thread state only)."""

    request_id: int
    request: GenerationRequest
    stream: Any  # the asyncio side; only handed back with the events
    submitted_at: float
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    slot: int = -1  # -1 waiting; a KV slot once admitted
    num_reused: int = 0  # prompt tokens whose KV the slot already held
    num_cached: int = 0  # prompt tokens whose KV is in the slot (reused + prefilled)
    num_dispatched: int = 0  # decode steps launched for it (results may still be on the way)
    generated: list[int] = field(default_factory=list)
    started_at: float | None = None
    first_token_at: float | None = None
    reported_position: int = 0
    finish: FinishReason | None = None
    error: str | None = None

    @classmethod
    def create(
        cls,
        request_id: int,
        request: GenerationRequest,
        stream: Any,
        submitted_at: float,
        *,
        tokenizer: Any,
    ) -> Sequence:
        return cls(
            request_id=request_id,
            request=request,
            stream=stream,
            submitted_at=submitted_at,
            detokenizer=IncrementalDetokenizer(tokenizer),
            stops=StopMatcher(request.params.stop),
        )

    @property
    def owner(self) -> str:
        return self.request.owner

    @property
    def num_prompt(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def deadline(self) -> float:
        return self.submitted_at + self.request.params.timeout_seconds

    @property
    def is_prefilled(self) -> bool:
        return self.num_cached >= self.num_prompt

    def num_decode_steps_allowed(self, slot_tokens: int) -> int:
        """How many decode steps it may run: each writes one position and adds one token."""
        by_length = self.request.params.max_new_tokens - 1  # the prefill gave the first token
        by_slot = slot_tokens - self.num_prompt  # step k writes position num_prompt + k - 1
        return max(0, min(by_length, by_slot))

    def cached_tokens(self) -> tuple[int, ...]:
        """The ids whose KV its slot certainly holds (the last token's KV may be unwritten)."""
        prompt = self.request.prompt_ids[: self.num_cached]
        if self.num_cached < self.num_prompt:
            return tuple(prompt)
        return (*prompt, *self.generated[:-1])

    def start(self, slot: int, num_reused: int, now: float) -> list[EngineEvent]:
        self.slot = slot
        self.num_reused = self.num_cached = num_reused
        self.started_at = now
        return [Started(num_prompt_tokens=self.num_prompt)]

    def accept_token(
        self, token: int, *, eos: frozenset[int], slot_tokens: int, now: float
    ) -> list[EngineEvent]:
        """Add one generated token; the events it causes (text, and the end if it ends here)."""
        self.generated.append(token)
        if self.first_token_at is None:
            self.first_token_at = now
        if token in eos:
            return self.end(FinishReason.EOS, now)
        text, is_stopped = self.stops.push(self.detokenizer.push(token))
        events: list[EngineEvent] = [TextDelta(text)] if text else []
        if is_stopped:
            events += self.end(FinishReason.STOP, now)
        elif (
            len(self.generated) >= self.request.params.max_new_tokens
            or self.num_prompt + len(self.generated) > slot_tokens
        ):
            events += self.end(FinishReason.LENGTH, now)
        return events

    def end(self, reason: FinishReason, now: float) -> list[EngineEvent]:
        """Its last text and its Finished event."""
        self.finish = reason
        events: list[EngineEvent] = []
        if reason not in (FinishReason.STOP, FinishReason.ERROR):
            # The held-back tail is real output once no stop string can complete.
            text, _ = self.stops.push(self.detokenizer.flush())
            text += self.stops.flush()
            if text:
                events.append(TextDelta(text))
        events.append(
            Finished(
                reason=reason,
                num_prompt_tokens=self.num_prompt,
                num_generated_tokens=len(self.generated),
                queued_seconds=(self.started_at or now) - self.submitted_at,
                first_token_seconds=None
                if self.first_token_at is None
                else self.first_token_at - self.submitted_at,
                total_seconds=now - self.submitted_at,
                error=self.error,
                num_reused_tokens=self.num_reused,
            )
        )
        return events
