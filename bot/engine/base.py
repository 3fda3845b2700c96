"""The engine interface: requests in, per-request streams of text events out."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from bot.types import ChatMessage, Queued, Started

__all__ = ["ChatMessage", "Queued", "Started"]  # re-exported: engine events share the vocabulary


class FinishReason(enum.StrEnum):
    """Why a generation stream ended; every stream ends with exactly one."""

    EOS = "eos"  # the model emitted an end-of-sequence token
    STOP = "stop"  # a configured stop string matched (it is not part of the text)
    LENGTH = "length"  # max_new_tokens reached
    TIMEOUT = "timeout"  # the request's deadline passed
    CANCELLED = "cancelled"  # the caller cancelled (user pressed Stop, consumer went away)
    SHUTDOWN = "shutdown"  # the engine is stopping
    ERROR = "error"  # the engine failed on this request; see Finished.error


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request generation settings."""

    max_new_tokens: int = 4096
    temperature: float = 0.6  # 0 means greedy
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    timeout_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt to complete.

    `prompt_ids` is the dialogue rendered with the model's chat template (what a local engine
    runs); `messages` is the same trimmed dialogue as chat messages, system prompt first (what
    a chat-completions server takes). `owner` groups requests for fair scheduling (one user);
    `dialogue` names the conversation it continues, so an engine may reuse what it kept of it
    (a hint only: reuse is decided by comparing token ids).
    """

    prompt_ids: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    owner: str = ""
    request_id: str = ""
    messages: tuple[ChatMessage, ...] = ()
    dialogue: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New output text; never half a character, never part of a stop string."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The final event of every stream."""

    reason: FinishReason
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    queued_seconds: float = 0.0  # submit -> start of prefill
    first_token_seconds: float | None = None  # submit -> first generated token
    total_seconds: float = 0.0  # submit -> end
    error: str | None = None  # for ERROR: a short, user-safe description
    num_reused_tokens: int = 0  # prompt tokens whose KV was kept from the dialogue's last turn


EngineEvent = Queued | Started | TextDelta | Finished


class GenerationStream(Protocol):
    """An async iterator of events for one request; it ends after `Finished`."""

    def __aiter__(self) -> AsyncIterator[EngineEvent]: ...

    async def __anext__(self) -> EngineEvent: ...

    def cancel(self) -> None:
        """Ask the engine to stop this request; the stream then ends with CANCELLED."""

    async def aclose(self) -> None:
        """Cancel (if still running) and drop the stream."""


class Engine(Protocol):
    """A text-generation backend shared by every chat; used as an async context manager."""

    async def __aenter__(self) -> Engine: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    @property
    def max_sequence_tokens(self) -> int:
        """The longest prompt + answer one request can have."""
        ...

    @property
    def max_batch_size(self) -> int:
        """How many requests are generated at once (more wait in the queue)."""
        ...

    @property
    def num_waiting(self) -> int:
        """Requests queued, not started yet."""
        ...

    @property
    def num_running(self) -> int:
        """Requests being generated now."""
        ...

    @property
    def is_up(self) -> bool:
        """Whether it can serve requests now (for health checks)."""
        ...

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Queue a request and return its stream; raises EngineBusy when the queue is full."""
        ...

    async def wait_broken(self) -> str:
        """Return (with the reason) once the engine can serve no more requests, for good."""
        ...


class EngineError(Exception):
    """The engine cannot be used (bad model path, no GPU for 4-bit, ...): user-safe text."""


class EngineBusy(EngineError):
    """The request queue is full; try again later."""
