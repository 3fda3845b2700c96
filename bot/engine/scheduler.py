"""Who runs next: first come, first served, one running request per owner, a bounded queue."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class WaitingQueue(Generic[T]):
    """FCFS queue that skips items whose owner already has a request running."""

    def __init__(self, owner_of: Callable[[T], str]) -> None:
        self._items: deque[T] = deque()
        self._owner_of = owner_of

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def append(self, item: T) -> None:
        self._items.append(item)

    def remove(self, item: T) -> None:
        self._items.remove(item)

    def pop_next(self, busy_owners: set[str]) -> T | None:
        """The oldest item whose owner is not busy (owner "" is never considered busy)."""
        for item in self._items:
            owner = self._owner_of(item)
            if not owner or owner not in busy_owners:
                self._items.remove(item)
                return item
        return None

    def positions(self, busy_owners: set[str]) -> Iterator[tuple[T, int]]:
        """Each item with its place in line (1 = next), counting the owner's own blocked turn."""
        # An item blocked behind its owner's running request still waits in FCFS order; its
        # position is its index, which never overstates how many requests are ahead of it.
        for index, item in enumerate(self._items, start=1):
            yield item, index
