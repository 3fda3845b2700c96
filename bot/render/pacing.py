"""How often one chat may be sent to: a minimum interval, a rolling budget, and 429 back-off."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol


class Clock(Protocol):
    """Time as the renderer sees it (injected so tests run on virtual time)."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ChatPacer:
    """Spaces the platform calls of one chat; shared by all messages (and replies) in it.

    `min_interval`: seconds between two calls. `max_calls` per `per_seconds`: an optional
    rolling budget (Telegram groups: about 20 per minute). `defer(s)` after a 429 blocks this
    chat only, never the whole bot.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float,
        max_calls: int | None = None,
        per_seconds: float = 60.0,
    ) -> None:
        if min_interval < 0 or (max_calls is not None and max_calls < 1) or per_seconds <= 0:
            raise ValueError("min_interval >= 0, max_calls >= 1 and per_seconds > 0 required")
        self._clock = clock
        self._min_interval = min_interval
        self._max_calls = max_calls
        self._per_seconds = per_seconds
        self._calls: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._lock = asyncio.Lock()  # waiters are served in arrival order

    def ready_at(self) -> float:
        """The earliest time the next call may start."""
        ready = self._blocked_until
        if self._calls:
            ready = max(ready, self._calls[-1] + self._min_interval)
        if self._max_calls is not None and len(self._calls) >= self._max_calls:
            ready = max(ready, self._calls[-self._max_calls] + self._per_seconds)
        return ready

    async def acquire(self) -> None:
        """Wait for this chat's turn and count one call."""
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                ready = self.ready_at()
                if ready <= now:
                    break
                # Re-check after waking: a defer() may have moved the time meanwhile.
                await self._clock.sleep(ready - now)
            self._calls.append(now)
            # Only the last max_calls calls matter (the last one for min_interval).
            while len(self._calls) > (self._max_calls or 1):
                self._calls.popleft()

    def defer(self, seconds: float) -> None:
        """The platform said 'retry after `seconds`': no call from this chat before then."""
        self._blocked_until = max(self._blocked_until, self._clock.monotonic() + seconds)
