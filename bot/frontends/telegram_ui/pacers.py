"""Per-chat pacing for Telegram: one pacer per chat, counting from when Telegram answered."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from bot.render.pacing import ChatPacer, Clock


class TelegramPacer(ChatPacer):
    """A ChatPacer whose spacing also counts from the moment Telegram answered the last call.

    ChatPacer spaces the moments calls are *started*. Telegram counts the moments they
    *arrive*; on a busy event loop a call can leave late (or the server can be slow to read
    it), and the next one, started on time, then arrives right behind it: a 429. So every call
    is made inside `sending()`, which lets one call at a time through per chat, and only
    `min_interval` after the previous one was answered (the budget is counted the same way).
    An answer comes after its call arrived, so arrivals are spaced at least as asked.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float,
        max_calls: int | None = None,
        per_seconds: float = 60.0,
    ) -> None:
        super().__init__(
            clock, min_interval=min_interval, max_calls=max_calls, per_seconds=per_seconds
        )
        self._min_gap = min_interval
        self._budget = max_calls
        self._window = per_seconds
        self._answered: deque[float] = deque(maxlen=max_calls or 1)
        self._deferred_until = -math.inf
        self._send_lock = asyncio.Lock()

    def ready_at(self) -> float:
        return max(super().ready_at(), self._answered_ready_at())

    def defer(self, seconds: float) -> None:
        super().defer(seconds)
        self._deferred_until = max(self._deferred_until, self._clock.monotonic() + seconds)

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Make one Bot API call of this chat inside this block."""
        async with self._send_lock:
            while (wait := self._answered_ready_at() - self._clock.monotonic()) > 0:
                await self._clock.sleep(wait)
            try:
                yield
            finally:
                self._answered.append(self._clock.monotonic())

    def _answered_ready_at(self) -> float:
        ready = self._deferred_until
        if self._answered:
            ready = max(ready, self._answered[-1] + self._min_gap)
        if self._budget is not None and len(self._answered) >= self._budget:
            ready = max(ready, self._answered[0] + self._window)
        return ready


@dataclass
class _Entry:
    pacer: TelegramPacer
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

    def set_min_interval(self, seconds: float) -> None:
        """A reloaded edit interval: for chats paced from now on (busy ones keep theirs)."""
        self._min_interval = seconds

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def lease(self, chat_id: int, *, is_group: bool) -> Iterator[TelegramPacer]:
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

    def _new_pacer(self, is_group: bool) -> TelegramPacer:
        if is_group:
            return TelegramPacer(
                self._clock,
                min_interval=self._min_interval,
                max_calls=self._group_calls,
                per_seconds=self._group_window,
            )
        return TelegramPacer(self._clock, min_interval=self._min_interval)

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
