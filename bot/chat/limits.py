"""Per-user message rate: a token bucket for each user, refilled continuously."""

from __future__ import annotations

import time
from collections.abc import Callable


class MessageRate:
    """At most `per_minute` messages a minute per user, with bursts up to `per_minute`.

    `allows` only looks; `take` spends one message once it was accepted, so a message that
    is refused for another reason costs the user nothing.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # user: (level, time)

    def allows(self, user: tuple[str, str]) -> bool:
        return self._level(user) >= 1.0

    def take(self, user: tuple[str, str]) -> None:
        self._buckets[user] = (self._level(user) - 1.0, self._clock())
        if len(self._buckets) > 10_000:  # forget users whose bucket is full again
            now = self._clock()
            self._buckets = {
                key: (level, at)
                for key, (level, at) in self._buckets.items()
                if level + (now - at) * self._per_second < self._capacity
            }

    def _level(self, user: tuple[str, str]) -> float:
        level, at = self._buckets.get(user, (self._capacity, self._clock()))
        return min(self._capacity, level + (self._clock() - at) * self._per_second)
