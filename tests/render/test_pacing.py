"""ChatPacer on a virtual clock: one call at a time per chat, spaced from when it was answered."""

from __future__ import annotations

import asyncio

import pytest

from bot.render.pacing import ChatPacer, ChatPacers, RateBudget
from tests.render.helpers import FakeClock

Log = list[tuple[float, float]]


async def _call(clock: FakeClock, pacer: ChatPacer, log: Log, duration: float = 0.0) -> None:
    """One call in the chat's turn that the platform takes `duration` seconds to answer."""
    async with pacer.turn():
        start = clock.monotonic()
        await clock.sleep(duration)
        log.append((start, clock.monotonic()))


async def _calls(clock: FakeClock, pacer: ChatPacer, count: int, duration: float = 0.0) -> Log:
    log: Log = []
    for _ in range(count):
        await _call(clock, pacer, log, duration)
    return log


def _starts(log: Log) -> list[float]:
    return [round(start, 3) for start, _ in log]


async def test_minimum_interval_between_calls() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.5)
    assert _starts(await clock.drive(_calls(clock, pacer, 4))) == [0.0, 1.5, 3.0, 4.5]


async def test_a_slow_answer_delays_the_next_call() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0)
    log: Log = []

    async def two_calls() -> None:
        await _call(clock, pacer, log, duration=0.7)
        await _call(clock, pacer, log, duration=0.1)

    await clock.drive(two_calls())
    # 1 s after the first call started would be 1.0; it waits for the answer (0.7) + 1 s.
    assert log == [(0.0, 0.7), (1.7, 1.8)]


async def test_one_call_at_a_time_per_chat_in_arrival_order() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=0.5)
    order: list[str] = []

    async def call(name: str) -> None:
        async with pacer.turn():
            order.append(f"{name}@{clock.monotonic():g}")
            await clock.sleep(2.0)

    await clock.drive(asyncio.gather(call("a"), call("b"), call("c")))
    assert order == ["a@0", "b@2.5", "c@5"]


async def test_rolling_budget_counts_answers() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=0.1, max_calls=3, per_seconds=10.0)
    log = await clock.drive(_calls(clock, pacer, 5, duration=1.0))
    # Answers at 1.0, 2.1 and 3.2 use the budget: the 4th call waits 10 s from the 1st answer,
    # the 5th 10 s from the 2nd.
    assert _starts(log) == [0.0, 1.1, 2.2, 11.0, 12.1]


async def test_rolling_budget_per_window() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0, max_calls=20, per_seconds=60.0)
    times = _starts(await clock.drive(_calls(clock, pacer, 45)))
    assert times[:20] == [float(i) for i in range(20)]
    assert times[20] == 60.0 and times[39] == 79.0 and times[40] == 120.0
    for i in range(20, 45):  # never more than 20 calls in any 60 s
        assert times[i] - times[i - 20] >= 60.0


async def test_defer_blocks_this_chat_only() -> None:
    clock = FakeClock()
    deferred = ChatPacer(clock, min_interval=1.0)
    other = ChatPacer(clock, min_interval=1.0)
    await clock.drive(_calls(clock, deferred, 1))
    deferred.defer(30.0)
    other_calls = asyncio.ensure_future(_calls(clock, other, 3))
    deferred_calls = asyncio.ensure_future(_calls(clock, deferred, 1))
    await clock.advance(10.0)
    assert other_calls.done() and _starts(other_calls.result()) == [0.0, 1.0, 2.0]
    assert not deferred_calls.done()
    await clock.advance(25.0)
    assert _starts(deferred_calls.result()) == [30.0]


async def test_defer_while_waiting_extends_the_wait() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=5.0)
    await clock.drive(_calls(clock, pacer, 1))
    waiter = asyncio.ensure_future(_calls(clock, pacer, 1))
    await clock.advance(2.0)
    pacer.defer(10.0)  # at t=2: blocked until 12, later than the interval's 5
    assert _starts(await clock.drive(waiter)) == [12.0]


async def test_a_turn_ended_elsewhere_spaces_the_next_call_from_the_answer() -> None:
    # The renderer's flusher may be cancelled mid-call: the call's own answer ends the turn.
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0)
    turn = await pacer.turn().__aenter__()
    clock.now = 3.0  # the platform answers at t=3
    turn.end()
    turn.end()  # ending twice changes nothing
    assert _starts(await clock.drive(_calls(clock, pacer, 1))) == [4.0]


async def test_a_cancelled_wait_gives_up_its_turn() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=5.0)
    await clock.drive(_calls(clock, pacer, 1))
    waiter = asyncio.ensure_future(_calls(clock, pacer, 1))
    await clock.advance(1.0)
    waiter.cancel()
    await asyncio.wait({waiter})
    assert _starts(await clock.drive(_calls(clock, pacer, 1))) == [5.0]


async def test_the_bot_wide_budget_is_shared_by_all_chats() -> None:
    clock = FakeClock()
    budget = RateBudget(clock, max_calls=2, per_seconds=1.0)
    chats = [ChatPacer(clock, min_interval=0.0, budget=budget) for _ in range(3)]
    logs = await clock.drive(asyncio.gather(*(_calls(clock, chat, 2) for chat in chats)))
    starts = sorted(start for log in logs for start in _starts(log))
    # Six calls from three chats that could all go at once: two a second.
    assert starts == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_pacers_are_shared_per_chat_and_pruned_when_idle() -> None:
    clock = FakeClock()
    pacers = ChatPacers(clock, min_interval=1.0, group_calls=20, prune_every=2)
    with pacers.lease(1, is_group=False) as first, pacers.lease(1, is_group=False) as again:
        assert first is again
    with pacers.lease(-5, is_group=True):
        pass
    assert len(pacers) == 2
    clock.now = 1000.0
    with pacers.lease(2, is_group=False):
        pass
    assert len(pacers) == 1  # chats 1 and -5 were idle longer than any window


async def test_group_chats_get_the_group_budget() -> None:
    clock = FakeClock()
    pacers = ChatPacers(clock, min_interval=0.0, group_calls=2, group_window=10.0)
    with pacers.lease(-1, is_group=True) as group, pacers.lease(1, is_group=False) as private:
        group_log = await clock.drive(_calls(clock, group, 3))
        clock.now = 0.0
        private_log = await clock.drive(_calls(clock, private, 3))
    assert _starts(group_log) == [0.0, 0.0, 10.0]
    assert _starts(private_log) == [0.0, 0.0, 0.0]


def test_rejects_bad_settings() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        ChatPacer(clock, min_interval=-1)
    with pytest.raises(ValueError):
        ChatPacer(clock, min_interval=1, max_calls=0)
    with pytest.raises(ValueError):
        RateBudget(clock, max_calls=0)
