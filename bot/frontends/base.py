"""What every chat-platform front-end offers the app's lifespan."""

from __future__ import annotations

from typing import Protocol


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

    async def stop_receiving(self) -> None:
        """Take no new messages (answers being written go on)."""

    async def close(self) -> None:
        """Land the final text of every answer still on screen, then disconnect."""
