"""ChatPacer on a virtual clock: interval, rolling budget, 429 deferral per chat."""

from __future__ import annotations

import asyncio

import pytest

from bot.render.pacing import ChatPacer
from tests.render.helpers import FakeClock


async def _calls(clock: FakeClock, pacer: ChatPacer, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await pacer.acquire()
        times.append(clock.monotonic())
    return times


async def test_minimum_interval_between_calls() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.5)
    assert await clock.drive(_calls(clock, pacer, 4)) == [0.0, 1.5, 3.0, 4.5]


async def test_rolling_budget_per_window() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0, max_calls=20, per_seconds=60.0)
    times = await clock.drive(_calls(clock, pacer, 45))
    assert times[:20] == [float(i) for i in range(20)]
    assert times[20] == 60.0 and times[39] == 79.0 and times[40] == 120.0
    for i in range(20, 45):  # never more than 20 calls in any 60 s
        assert times[i] - times[i - 20] >= 60.0


async def test_defer_blocks_this_chat_only() -> None:
    clock = FakeClock()
    deferred = ChatPacer(clock, min_interval=1.0)
    other = ChatPacer(clock, min_interval=1.0)
    await deferred.acquire()
    deferred.defer(30.0)
    other_times = asyncio.ensure_future(_calls(clock, other, 3))
    deferred_times = asyncio.ensure_future(_calls(clock, deferred, 1))
    await clock.advance(10.0)
    assert other_times.done() and other_times.result() == [0.0, 1.0, 2.0]
    assert not deferred_times.done()
    await clock.advance(25.0)
    assert deferred_times.result() == [30.0]


async def test_defer_while_waiting_extends_the_wait() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=5.0)
    await pacer.acquire()
    waiter = asyncio.ensure_future(_calls(clock, pacer, 1))
    await clock.advance(2.0)
    pacer.defer(10.0)  # at t=2: blocked until 12, later than the interval's 5
    assert await clock.drive(waiter) == [12.0]


async def test_concurrent_waiters_are_served_in_order() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0)
    order: list[str] = []

    async def call(name: str) -> None:
        await pacer.acquire()
        order.append(f"{name}@{clock.monotonic():g}")

    await clock.drive(asyncio.gather(call("a"), call("b"), call("c")))
    assert order == ["a@0", "b@1", "c@2"]


def test_rejects_bad_settings() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        ChatPacer(clock, min_interval=-1)
    with pytest.raises(ValueError):
        ChatPacer(clock, min_interval=1, max_calls=0)
