"""ReplyTracker and render_reply: replies are counted while shown and all land at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bot.render.delivery import DeliveryOptions, DeliveryRefused, RetryAfter
from bot.render.layout import TelegramLayout
from bot.render.pacing import ChatPacer, Clock, SystemClock
from bot.render.replies import ReplyTracker, render_reply
from bot.render.stream import StreamRenderer
from bot.types import AnswerDelta, ReplyEvent, ReplyFinished, ReplyStatus
from tests.render.helpers import FakeClock, FakeSink


class FakeReply:
    """A reply whose stream runs until it is interrupted or stopped (like the real one)."""

    def __init__(self, text: str = "partial") -> None:
        self.text = text
        self.ended: str | None = None
        self.is_stopped = False
        self._end = asyncio.Event()

    def interrupt(self) -> None:
        self._finish("interrupted")

    def stop(self) -> None:
        self.is_stopped = True
        self._finish("stopped")

    def _finish(self, how: str) -> None:
        self.ended = self.ended or how
        self._end.set()

    async def events(self) -> AsyncIterator[ReplyEvent]:
        yield AnswerDelta(self.text)
        await self._end.wait()
        yield ReplyFinished(status=ReplyStatus.INTERRUPTED, answer=self.text, reasoning="")


class StuckReply(FakeReply):
    """A stream that ignores interrupt(): only cancelling its task ends it."""

    def interrupt(self) -> None:
        self.ended = "interrupted"

    async def events(self) -> AsyncIterator[ReplyEvent]:
        yield AnswerDelta(self.text)
        await asyncio.Event().wait()
        yield AnswerDelta("never")


# For tests where close() waits on the event loop's own clock: real time, short intervals.
QUICK = DeliveryOptions(edit_interval=0.01)


def _renderer(
    sink: FakeSink, clock: Clock, options: DeliveryOptions | None = None
) -> StreamRenderer:
    pacer = ChatPacer(clock, min_interval=0.0)
    return StreamRenderer(sink, TelegramLayout("hidden"), clock=clock, pacer=pacer, options=options)


async def _show(reply: FakeReply, sink: FakeSink, clock: Clock) -> None:
    options = QUICK if isinstance(clock, SystemClock) else None
    await render_reply(_renderer(sink, clock, options), reply, reply.events(), shutdown_note="Bye.")


async def test_close_interrupts_every_reply_and_waits_until_its_text_landed() -> None:
    clock = FakeClock()
    tracker = ReplyTracker()
    replies = [FakeReply(f"answer {i}") for i in range(3)]
    sinks = [FakeSink(clock) for _ in replies]
    for reply, sink in zip(replies, sinks, strict=True):
        tracker.start(reply, _show(reply, sink, clock), name="reply")
    await clock.settle()
    assert tracker.num_open == 3
    assert not tracker.is_closing
    await clock.drive(tracker.close(timeout=30.0))
    assert tracker.num_open == 0
    assert tracker.is_closing  # a reply started from now on is shown as interrupted
    assert [r.ended for r in replies] == ["interrupted"] * 3
    for i, sink in enumerate(sinks):
        assert sink.messages == {0: f"answer {i}\n\n<i>⚠️ Interrupted.</i>"}
        assert sink.finals == {0: True}


async def test_a_stuck_reply_is_cancelled_and_lands_its_text_with_the_shutdown_note() -> None:
    tracker = ReplyTracker()
    reply = StuckReply("so far")
    sink = FakeSink(FakeClock())
    tracker.start(reply, _show(reply, sink, SystemClock()), name="stuck")
    await asyncio.sleep(0.01)
    await tracker.close(timeout=0.05)  # real time: close() waits on the loop's clock
    assert tracker.num_open == 0
    assert sink.messages == {0: "so far\n\n<i>Bye.</i>"}


async def test_close_waits_for_a_reply_still_starting() -> None:
    tracker = ReplyTracker()
    reply = FakeReply("late")
    sink = FakeSink(FakeClock())
    started = asyncio.Event()

    async def begin() -> None:
        await tracker.starting(started.wait())
        tracker.start(reply, _show(reply, sink, SystemClock()), name="late")

    beginning = asyncio.ensure_future(begin())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(tracker.close(timeout=30.0))
    await asyncio.sleep(0.01)
    assert not closing.done()  # the reply was asked for: close() does not leave it behind
    started.set()
    await beginning
    await closing
    assert reply.ended == "interrupted" and sink.finals == {0: True}


async def test_a_reply_that_cannot_be_shown_is_stopped() -> None:
    clock = FakeClock()
    reply = FakeReply()
    reply.interrupt()  # the stream ends: the failure is noticed when the text should land
    sink = FakeSink(clock)
    sink.fail(PermissionError("bot blocked"), times=-1)
    landed = await clock.drive(
        render_reply(_renderer(sink, clock), reply, reply.events(), shutdown_note="Bye.")
    )
    assert not landed and reply.is_stopped


async def test_a_final_text_that_never_lands_is_reported_not_raised() -> None:
    clock = FakeClock()
    reply = FakeReply()
    reply.interrupt()
    sink = FakeSink(clock)
    sink.fail(RetryAfter(1000.0), times=-1)  # longer than the final timeout
    landed = await clock.drive(
        render_reply(_renderer(sink, clock), reply, reply.events(), shutdown_note="Bye.")
    )
    assert not landed and sink.messages == {}


async def test_a_reply_the_platform_refuses_is_stopped_with_a_warning_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    reply = FakeReply()
    reply.interrupt()  # the stream ends: the refusal is noticed when the text should land
    sink = FakeSink(clock)
    sink.fail(DeliveryRefused("Forbidden: bot was blocked by the user"), times=-1)
    with caplog.at_level(logging.WARNING, logger="bot.render.replies"):
        landed = await clock.drive(
            render_reply(_renderer(sink, clock), reply, reply.events(), name="reply 7")
        )
    assert not landed and reply.is_stopped
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "reply 7" in record.getMessage() and "blocked by the user" in record.getMessage()
