"""What every chat-platform front-end offers the app's lifespan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.store.records import InterruptedReply


class StartupError(Exception):
    """A front-end could not start (bad token, unreachable API): one user-safe sentence."""


class Frontend(Protocol):
    """A platform connection; started after the engine, stopped before it."""

    name: str

    @property
    def is_up(self) -> bool:
        """Connected and taking messages (for /healthz)."""

    async def start(self) -> None:
        """Connect and begin taking messages; returns once running."""

    async def announce_interrupted(self, interrupted: Sequence[InterruptedReply]) -> None:
        """Tell the chats whose answers a killed bot left cut (this platform's ones only)."""

    async def stop_receiving(self) -> None:
        """Take no new messages (answers being written go on)."""

    async def close(self) -> None:
        """Land the final text of every answer still on screen, then disconnect."""
