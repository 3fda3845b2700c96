"""One queue-backed event stream: put from the event loop, read with `async for` to its last event.

The engine's streams (local and remote) and a chat reply are all this shape; they share it here,
at the bottom of the house, where nothing else is imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class EventQueue(Generic[T]):
    """Events in the order they were put; iteration ends after the event `is_last` accepts."""

    def __init__(self, is_last: Callable[[T], bool]) -> None:
        self._events: asyncio.Queue[T] = asyncio.Queue()
        self._is_last = is_last
        self._is_done = False

    @property
    def is_done(self) -> bool:
        """The last event has been read."""
        return self._is_done

    def put(self, event: T) -> None:
        self._events.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._is_done:
            raise StopAsyncIteration
        event = await self._events.get()
        if self._is_last(event):
            self._is_done = True
        return event
