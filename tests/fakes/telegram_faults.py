"""Failures the fake Telegram server can produce: queued faults and Telegram-like flood control."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ANY_METHOD = "*"

# Calls that post or change something visible in a chat; these are what Telegram rate-limits.
FLOOD_LIMITED_METHODS = frozenset(
    {"sendMessage", "editMessageText", "editMessageReplyMarkup", "sendMessageDraft"}
)


@dataclass
class Fault:
    """One queued failure: an HTTP error (optionally with retry_after) and/or a delay."""

    method: str  # Bot API method name, or ANY_METHOD (every method except getUpdates)
    chat_id: int | str | None  # None matches calls to any chat (and calls without a chat)
    times: int
    status: int | None = None  # None: handle the call normally, answer after `delay`
    description: str = ""
    retry_after: int | None = None
    raw_body: str | None = None  # sent as text/html instead of the JSON error (a proxy's page)
    delay: float = 0.0

    def matches(self, method: str, chat_id: int | str | None) -> bool:
        """Whether this fault applies to a call of method in chat_id."""
        if self.method == ANY_METHOD:
            # A running poller would swallow "any method" faults meant for the bot's own calls.
            if method == "getUpdates":
                return False
        elif self.method != method:
            return False
        return self.chat_id is None or self.chat_id == chat_id


@dataclass
class FaultQueue:
    """Faults in the order they were queued; each fires for its next `times` matching calls."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        """Queue a fault."""
        if fault.times < 1:
            raise ValueError("times must be at least 1")
        self.faults.append(fault)

    def take(self, method: str, chat_id: int | str | None) -> Fault | None:
        """The first fault matching this call, used up by one; None when no fault applies."""
        for fault in self.faults:
            if fault.matches(method, chat_id):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        """Drop all queued faults."""
        self.faults.clear()


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's (unpublished, approximate) flood limits; a call over any of them gets a 429."""

    per_chat_per_second: int = 1
    per_group_per_minute: int = 20
    global_per_second: int = 30
    methods: frozenset[str] = FLOOD_LIMITED_METHODS


class FloodControl:
    """Sliding-window counters per chat, per group and globally, on an injectable clock."""

    def __init__(self, limits: FloodLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._per_chat: dict[int | str, deque[float]] = {}
        self._per_group: dict[int | str, deque[float]] = {}
        self._global: deque[float] = deque()

    def admit(self, method: str, chat_id: int | str | None, is_group: bool) -> int | None:
        """Count an allowed call and return None; for a refused one return retry_after seconds."""
        if method not in self.limits.methods:
            return None
        now = self._clock()
        windows: list[tuple[deque[float], float, int]] = [
            (self._global, 1.0, self.limits.global_per_second)
        ]
        if chat_id is not None:
            windows.append(
                (self._per_chat.setdefault(chat_id, deque()), 1.0, self.limits.per_chat_per_second)
            )
            if is_group:
                windows.append(
                    (
                        self._per_group.setdefault(chat_id, deque()),
                        60.0,
                        self.limits.per_group_per_minute,
                    )
                )
        retry_after = 0.0
        for times, span, limit in windows:
            while times and times[0] <= now - span:
                times.popleft()
            if len(times) >= limit:
                retry_after = max(retry_after, times[len(times) - limit] + span - now)
        if retry_after > 0:
            # Telegram sends whole seconds, never zero.
            return max(1, math.ceil(retry_after))
        for times, _, _ in windows:
            times.append(now)
        return None
