"""One ChatPacer per Telegram chat, shared by every reply and notice there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bot.render.pacing import ChatPacer, Clock


@dataclass
class _Entry:
    pacer: ChatPacer
    num_users: int = 0
    last_used: float = 0.0


class ChatPacers:
    """Hands out each chat's pacer; forgets pacers no one used for longer than any window.

    Private chats: one call per `min_interval`. Groups: that, and at most `group_calls` per
    `group_window` seconds (Telegram allows about 20 per minute in a group).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float,
        group_calls: int,
        group_window: float = 60.0,
        prune_every: int = 512,
    ) -> None:
        self._clock = clock
        self._min_interval = min_interval
        self._group_calls = group_calls
        self._group_window = group_window
        self._prune_every = prune_every
        self._entries: dict[int, _Entry] = {}
        self._num_leases = 0

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def lease(self, chat_id: int, *, is_group: bool) -> Iterator[ChatPacer]:
        """The chat's pacer, kept while the block runs (a long answer keeps its budget)."""
        entry = self._entries.get(chat_id)
        if entry is None:
            entry = self._entries[chat_id] = _Entry(self._new_pacer(is_group))
        entry.num_users += 1
        try:
            yield entry.pacer
        finally:
            entry.num_users -= 1
            entry.last_used = self._clock.monotonic()
            self._num_leases += 1
            if self._num_leases % self._prune_every == 0:
                self._prune()

    def _new_pacer(self, is_group: bool) -> ChatPacer:
        if is_group:
            return ChatPacer(
                self._clock,
                min_interval=self._min_interval,
                max_calls=self._group_calls,
                per_seconds=self._group_window,
            )
        return ChatPacer(self._clock, min_interval=self._min_interval)

    def _prune(self) -> None:
        # An idle pacer older than every window remembers nothing that still limits a call.
        horizon = self._clock.monotonic() - max(self._group_window, self._min_interval) - 1.0
        idle = [
            chat_id
            for chat_id, entry in self._entries.items()
            if entry.num_users == 0 and max(entry.last_used, entry.pacer.ready_at()) < horizon
        ]
        for chat_id in idle:
            del self._entries[chat_id]
