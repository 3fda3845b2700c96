"""TelegramPacer on virtual time: calls are spaced from when Telegram answered the last one."""

from __future__ import annotations

import asyncio

from bot.frontends.telegram_ui.pacers import ChatPacers, TelegramPacer
from tests.render.helpers import FakeClock


async def _call(
    clock: FakeClock, pacer: TelegramPacer, log: list[tuple[float, float]], duration: float
) -> None:
    """One paced call that the server takes `duration` seconds to answer."""
    await pacer.acquire()
    async with pacer.sending():
        start = clock.monotonic()
        await clock.sleep(duration)
        log.append((start, clock.monotonic()))


async def test_a_slow_answer_delays_the_next_call() -> None:
    clock = FakeClock()
    pacer = TelegramPacer(clock, min_interval=1.0)
    log: list[tuple[float, float]] = []

    async def two_calls() -> None:
        await _call(clock, pacer, log, duration=0.7)
        await _call(clock, pacer, log, duration=0.1)

    await clock.drive(two_calls())
    # Started 1 s after the first call started would be 1.0; it waits for the answer (0.7) + 1 s.
    assert log == [(0.0, 0.7), (1.7, 1.8)]


async def test_one_call_at_a_time_per_chat() -> None:
    clock = FakeClock()
    pacer = TelegramPacer(clock, min_interval=0.5)
    log: list[tuple[float, float]] = []
    calls = [_call(clock, pacer, log, duration=2.0) for _ in range(3)]
    await clock.drive(asyncio.gather(*calls))
    starts = [start for start, _ in log]
    assert starts == [0.0, 2.5, 5.0]


async def test_group_budget_counts_answers() -> None:
    clock = FakeClock()
    pacer = TelegramPacer(clock, min_interval=0.1, max_calls=3, per_seconds=10.0)
    log: list[tuple[float, float]] = []

    async def five_calls() -> None:
        for _ in range(5):
            await _call(clock, pacer, log, duration=1.0)

    await clock.drive(five_calls())
    starts = [round(start, 3) for start, _ in log]
    # Answers at 1.0, 2.1 and 3.2 use the budget: the 4th call waits 10 s from the 1st answer,
    # the 5th 10 s from the 2nd.
    assert starts == [0.0, 1.1, 2.2, 11.0, 12.1]


async def test_retry_after_blocks_sending() -> None:
    clock = FakeClock()
    pacer = TelegramPacer(clock, min_interval=0.2)
    log: list[tuple[float, float]] = []

    async def refused_then_retried() -> None:
        await _call(clock, pacer, log, duration=0.0)
        pacer.defer(3.0)
        await _call(clock, pacer, log, duration=0.0)

    await clock.drive(refused_then_retried())
    assert [start for start, _ in log] == [0.0, 3.0]


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
