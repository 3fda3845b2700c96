"""RetryPolicy on a virtual clock: 429s hold back the chat, transient errors back off, give up."""

from __future__ import annotations

import pytest

from bot.render.delivery import (
    DeliveryFailed,
    DeliveryOptions,
    RetryAfter,
    RetryPolicy,
    TransientSinkError,
)
from bot.render.pacing import ChatPacer
from tests.render.helpers import FakeClock


class FlakyPlatform:
    """Answers each call with the next scripted outcome (an exception, or success)."""

    def __init__(self, clock: FakeClock, *outcomes: Exception | None) -> None:
        self._clock = clock
        self._outcomes = list(outcomes)
        self.times: list[float] = []

    async def send(self) -> str:
        self.times.append(self._clock.monotonic())
        outcome = self._outcomes.pop(0) if self._outcomes else None
        if outcome is not None:
            raise outcome
        return "sent"


async def test_a_429_holds_back_the_chat_and_the_call_is_made_again() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=1.0)
    platform = FlakyPlatform(clock, RetryAfter(7.0))
    result = await clock.drive(RetryPolicy().call(pacer, clock, platform.send))
    assert result == "sent"
    assert platform.times == [0.0, 7.0]  # as long as the platform asked, not a backoff
    assert pacer.ready_at() == 8.0  # and the chat's next call is spaced from that answer


async def test_transient_errors_back_off_doubling() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=0.0)
    errors = [TransientSinkError("reset") for _ in range(3)]
    platform = FlakyPlatform(clock, *errors)
    await clock.drive(RetryPolicy(first_backoff=0.5).call(pacer, clock, platform.send))
    assert platform.times == [0.0, 0.5, 1.5, 3.5]


async def test_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=0.0)
    platform = FlakyPlatform(clock, *[TransientSinkError("down") for _ in range(10)])
    with pytest.raises(DeliveryFailed, match="3 attempts"):
        await clock.drive(RetryPolicy(max_attempts=3).call(pacer, clock, platform.send))
    assert len(platform.times) == 3


async def test_other_errors_are_not_retried() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock, min_interval=0.0)
    platform = FlakyPlatform(clock, PermissionError("blocked by the user"))
    with pytest.raises(PermissionError):
        await clock.drive(RetryPolicy().call(pacer, clock, platform.send))
    assert len(platform.times) == 1


def test_backoff_is_capped_and_a_429_waits_as_told() -> None:
    policy = RetryPolicy(first_backoff=0.5, max_backoff=10.0)
    waits = [policy.wait_after(TransientSinkError("x"), n) for n in range(1, 8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.wait_after(RetryAfter(42), 5) == 42.0


def test_transient_errors_say_their_kind() -> None:
    assert TransientSinkError("x").kind == "network"
    assert TransientSinkError("x", kind="server_error").kind == "server_error"


def test_delivery_options_refuse_nonsense() -> None:
    assert DeliveryOptions().edit_interval > 0
    with pytest.raises(ValueError):
        DeliveryOptions(edit_interval=0)
    with pytest.raises(ValueError):
        DeliveryOptions(final_timeout=-1)
