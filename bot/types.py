"""The shared vocabulary (the ground floor): whose dialogue, how a reply ended, reply events.

Store, engine, chat core, renderer and front-ends all import from here; this module imports
nothing of the bot's own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ChatKey:
    """Whose dialogue: one per (platform, chat, user), so group members each have their own."""

    platform: str
    chat_id: str
    user_id: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.chat_id}:{self.user_id}"


class ReplyStatus(enum.StrEnum):
    """How an assistant reply ended (or that it is still being written); stored with the reply."""

    COMPLETE = "complete"  # the model finished (EOS or a stop string)
    LENGTH = "length"  # cut at max_new_tokens
    STOPPED = "stopped"  # the user pressed Stop / sent /stop
    TIMEOUT = "timeout"  # generation.timeout_seconds passed
    FAILED = "failed"  # the engine failed
    INTERRUPTED = "interrupted"  # the bot shut down (or was killed) mid-answer
    STREAMING = "streaming"  # still being written: the stored text is the last checkpoint


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a dialogue as a chat API sees it."""

    role: Literal["system", "user", "assistant"]
    content: str


# One lifecycle, one vocabulary: the engine emits these and the reply passes them on.


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits behind others; `position` 1 means it is next."""

    position: int


@dataclass(frozen=True, slots=True)
class Started:
    """The request left the queue: its prompt is being processed."""

    num_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """More of the model's reasoning (text inside <think> ... </think>)."""

    text: str


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """More of the answer proper."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """The last event: the whole reply as stored, and how it ended."""

    status: ReplyStatus
    answer: str
    reasoning: str
    note: str | None = None  # a short user-facing note for endings other than COMPLETE
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    first_token_seconds: float | None = None
    total_seconds: float = 0.0
    # Of num_prompt_tokens, those whose KV came from the dialogue's previous turn (local engine).
    num_reused_tokens: int = 0


ReplyEvent = Queued | Started | ReasoningDelta | AnswerDelta | ReplyFinished


class ChatError(Exception):
    """A request the bot refuses, with a message meant for the user (nothing was changed)."""
