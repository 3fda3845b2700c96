"""How often one chat may be sent to: one gate per platform call, spaced from its answer."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


class RateBudget:
    """At most `max_calls` calls in any `per_seconds` (a platform's bot-wide limit).

    It waits, never refuses: Telegram allows a bot about 30 messages a second over all chats.
    """

    def __init__(self, clock: Clock, *, max_calls: int, per_seconds: float = 1.0) -> None:
        if max_calls < 1 or per_seconds <= 0:
            raise ValueError("max_calls >= 1 and per_seconds > 0 required")
        self._clock = clock
        self._max_calls = max_calls
        self._per_seconds = per_seconds
        self._calls: deque[float] = deque(maxlen=max_calls)
        self._lock = asyncio.Lock()  # waiters are served in arrival order

    async def take(self) -> None:
        """Wait until one more call fits the budget, and count it."""
        async with self._lock:
            while len(self._calls) == self._max_calls:
                wait = self._calls[0] + self._per_seconds - self._clock.monotonic()
                if wait <= 0:
                    break
                await self._clock.sleep(wait)
            self._calls.append(self._clock.monotonic())


class ChatPacer:
    """The one gate every platform call of one chat goes through (all its replies share it).

    `turn()` lets one call at a time through, `min_interval` after the platform *answered*
    the previous one: platforms count the moments calls arrive, and a call that left late or
    was held back by the platform's library (discord.py waits out a 429 inside the call)
    would otherwise be followed at once by the next. `max_calls` per `per_seconds`: an
    optional rolling budget (Telegram groups: about 20 per minute), counted by answers too.
    `budget`: a bot-wide RateBudget taken inside the turn. `defer(s)` after a 429 holds back
    this chat only, never the whole bot.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float,
        max_calls: int | None = None,
        per_seconds: float = 60.0,
        budget: RateBudget | None = None,
    ) -> None:
        if min_interval < 0 or (max_calls is not None and max_calls < 1) or per_seconds <= 0:
            raise ValueError("min_interval >= 0, max_calls >= 1 and per_seconds > 0 required")
        self._clock = clock
        self._min_interval = min_interval
        self._max_calls = max_calls
        self._per_seconds = per_seconds
        self._budget = budget
        # Only the last max_calls answers matter (the last one for min_interval).
        self._answered: deque[float] = deque(maxlen=max_calls or 1)
        self._blocked_until = -math.inf
        self._lock = asyncio.Lock()  # one call at a time; waiters in arrival order

    def ready_at(self) -> float:
        """The earliest time the next call may start (later if a call is still in flight)."""
        ready = self._blocked_until
        if self._answered:
            ready = max(ready, self._answered[-1] + self._min_interval)
        if self._max_calls is not None and len(self._answered) == self._max_calls:
            ready = max(ready, self._answered[0] + self._per_seconds)
        return ready

    def turn(self) -> Turn:
        """The next call's turn: `async with pacer.turn(): <one platform call>`."""
        return Turn(self)

    async def _enter(self) -> None:
        await self._lock.acquire()
        try:
            # Re-checked after waking: a defer() may have moved the time meanwhile.
            while (wait := self.ready_at() - self._clock.monotonic()) > 0:
                await self._clock.sleep(wait)
            if self._budget is not None:
                await self._budget.take()
        except BaseException:
            self._lock.release()
            raise

    def _leave(self) -> None:
        self._answered.append(self._clock.monotonic())
        self._lock.release()

    def defer(self, seconds: float) -> None:
        """The platform said 'retry after `seconds`': no call from this chat before then."""
        self._blocked_until = max(self._blocked_until, self._clock.monotonic() + seconds)


class Turn:
    """One platform call's turn in its chat: from when the chat may be called until answered.

    Used as `async with`; or entered, then ended with `end()` from wherever the call's answer
    arrives (a done callback), so a caller cancelled mid-call does not end the turn early.
    """

    def __init__(self, pacer: ChatPacer) -> None:
        self._pacer = pacer
        self._is_open = False

    async def __aenter__(self) -> Turn:
        await self._pacer._enter()
        self._is_open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.end()

    def end(self) -> None:
        """The platform answered (or the call failed): the chat's next call may follow."""
        if self._is_open:
            self._is_open = False
            self._pacer._leave()


@dataclass
class _Entry:
    pacer: ChatPacer
    num_users: int = 0
    last_used: float = 0.0


class ChatPacers:
    """Hands out each chat's pacer; forgets pacers no one used for longer than any window.

    Every chat: one call per `min_interval`. Chats leased with `is_group`: also at most
    `group_calls` per `group_window` seconds (Telegram allows about 20 per minute in a group).
    Every pacer takes the bot-wide `budget`, if any, in its turn.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float,
        group_calls: int | None = None,
        group_window: float = 60.0,
        budget: RateBudget | None = None,
        prune_every: int = 512,
    ) -> None:
        self._clock = clock
        self._min_interval = min_interval
        self._group_calls = group_calls
        self._group_window = group_window
        self._budget = budget
        self._prune_every = prune_every
        self._entries: dict[int, _Entry] = {}
        self._num_leases = 0

    def set_min_interval(self, seconds: float) -> None:
        """A reloaded interval: for chats paced from now on (busy ones keep theirs)."""
        self._min_interval = seconds

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
        return ChatPacer(
            self._clock,
            min_interval=self._min_interval,
            max_calls=self._group_calls if is_group else None,
            per_seconds=self._group_window,
            budget=self._budget,
        )

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
