"""StreamRenderer: one reply's events -> paced sends and edits of its messages via a sink."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bot.render.delivery import (
    DeliveryFailed,
    DeliveryOptions,
    MessageSink,
    NotModified,
    RetryAfter,
    RetryPolicy,
    TransientSinkError,
)
from bot.render.layout import Layout, ReplyView
from bot.render.pacing import ChatPacer, Clock, Turn
from bot.types import (
    AnswerDelta,
    Queued,
    ReasoningDelta,
    ReplyEvent,
    ReplyFinished,
    ReplyStatus,
    Started,
)

log = logging.getLogger(__name__)

ENDING_NOTES: dict[ReplyStatus, str] = {
    ReplyStatus.LENGTH: "✂️ Cut off at the length limit.",
    ReplyStatus.STOPPED: "⏹ Stopped.",
    ReplyStatus.TIMEOUT: "⌛ Timed out.",
    ReplyStatus.FAILED: "⚠️ Something went wrong while answering.",
    ReplyStatus.INTERRUPTED: "⚠️ Interrupted.",
}


def queue_status(position: int) -> str:
    return f"⏳ In queue: position {position}"


def thinking_status(seconds: int) -> str:
    return "💭 Thinking…" if seconds <= 0 else f"💭 Thinking… {seconds} s"


STARTING_STATUS = "⏳ Starting…"
PLACEHOLDER = "…"


class _Content:
    """What the reply says so far, fed by its events; the view of it at a given moment."""

    def __init__(self, tick_interval: float) -> None:
        self._tick_interval = tick_interval
        self.reasoning: list[str] = []
        self.answer: list[str] = []
        self.position: int | None = None
        self.thinking_since: float | None = None
        self.is_final = False
        self.note: str | None = None

    def feed(self, event: ReplyEvent, now: float) -> None:
        if isinstance(event, Queued):
            self.position = event.position
        elif isinstance(event, Started):
            self._start_thinking(now)
        elif isinstance(event, ReasoningDelta):
            self._start_thinking(now)
            self.reasoning.append(event.text)
        elif isinstance(event, AnswerDelta):
            self.answer.append(event.text)
        elif isinstance(event, ReplyFinished):
            # The stored reply is authoritative where it has text.
            if event.reasoning:
                self.reasoning = [event.reasoning]
            if event.answer:
                self.answer = [event.answer]
            self.finalize(event.note or ENDING_NOTES.get(event.status))

    def finalize(self, note: str | None) -> None:
        self.is_final = True
        self.note = note

    def _start_thinking(self, now: float) -> None:
        if self.thinking_since is None:
            self.thinking_since = now

    def thinking_seconds(self, now: float) -> int | None:
        """Seconds of thinking to show (in whole ticks), or None if no clock is shown."""
        if self.is_final or self.thinking_since is None or any(t.strip() for t in self.answer):
            return None
        ticks = (now - self.thinking_since) // self._tick_interval
        return int(ticks * self._tick_interval)

    def next_status_change(self, now: float) -> float | None:
        if self.thinking_seconds(now) is None or self.thinking_since is None:
            return None
        ticks = (now - self.thinking_since) // self._tick_interval + 1
        return self.thinking_since + ticks * self._tick_interval

    def view(self, seconds: int | None) -> ReplyView:
        answer = "".join(self.answer)
        status = None
        if not self.is_final and not answer.strip():
            if seconds is not None:
                status = thinking_status(seconds)
            elif self.position is not None:
                status = queue_status(self.position)
            else:
                status = STARTING_STATUS
        return ReplyView(
            reasoning="".join(self.reasoning),
            answer=answer,
            status=status,
            note=self.note if self.is_final else None,
            is_final=self.is_final,
        )


@dataclass
class _Message:
    """How one message of the reply is being delivered."""

    shown: tuple[str, bool] | None = None  # (text, final) that landed
    last_call: float | None = None  # when the last call for it ended
    retry_at: float = -math.inf  # after a transient error: not before then
    failures: int = 0  # in a row


class StreamRenderer:
    """Renders one reply into one or more messages while it streams, and lands its final text.

    Feed it events (`feed`, or `run` over an async iterator). A single flusher task pushes the
    latest layout through the sink: per message at most one call per `edit_interval`, every
    call in a turn of the chat's shared `pacer`, never a call that repeats what a message
    shows. Failed calls are retried as `policy` says (the newest text each time); the final
    text until `final_timeout` seconds have passed, then DeliveryFailed is raised.
    """

    def __init__(
        self,
        sink: MessageSink,
        layout: Layout,
        *,
        clock: Clock,
        pacer: ChatPacer,
        options: DeliveryOptions | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._sink = sink
        self._layout = layout
        self._clock = clock
        self._pacer = pacer
        self._options = options or DeliveryOptions()
        self._policy = policy or RetryPolicy()
        self._content = _Content(self._options.tick_interval)
        self._version = 0  # bumped by every event; keys the layout cache
        self._cache: tuple[tuple[int, int | None], list[str]] | None = None
        self._messages: dict[int, _Message] = {}
        self._last_error: BaseException | None = None
        self._num_final_attempts = 0
        self._deadline = math.inf
        self._changed = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._is_done = False

    # Public ---------------------------------------------------------------------------------

    @property
    def is_done(self) -> bool:
        """The final text of every message has landed."""
        return self._is_done

    @property
    def messages(self) -> list[str]:
        """The texts the messages should show now (the latest layout)."""
        return list(self._render())

    @property
    def shown(self) -> list[str]:
        """The texts the platform has accepted, by message index."""
        landed = sorted((i, m.shown[0]) for i, m in self._messages.items() if m.shown)
        return [text for _, text in landed]

    def feed(self, event: ReplyEvent) -> None:
        """Take one event; the flusher shows the new state within one interval."""
        if self._content.is_final:
            return
        self._content.feed(event, self._clock.monotonic())
        if self._content.is_final:
            self._deadline = self._clock.monotonic() + self._options.final_timeout
        self._touch()

    async def run(self, events: AsyncIterator[ReplyEvent]) -> None:
        """Feed every event, then wait until the final text has landed.

        A stream that ends without ReplyFinished is finished as interrupted. On an exception
        or cancellation the flusher stops (a sink call in flight completes on its own) and
        the error propagates: call `finish_now` to land the text so far.
        """
        try:
            async for event in events:
                self.feed(event)
                if self._flusher is not None and self._flusher.done():
                    await self._flusher  # the sink failed for good: say so now, not at the end
                if self._content.is_final:
                    break
            if not self._content.is_final:
                self._finalize(ENDING_NOTES[ReplyStatus.INTERRUPTED])
                self._touch()
            await self.wait_done()
        except BaseException:
            await self._stop_flusher()
            raise

    async def wait_done(self) -> None:
        """Wait until the final text has landed; raises DeliveryFailed or the sink's error."""
        if self._is_done or self._flusher is None:
            return
        await self._flusher

    async def finish_now(self, note: str | None = None) -> None:
        """Land 'text so far + note' as the final version now.

        For shutdown or errors: call it after the task running `run()` was cancelled or failed
        (not while it runs), or when feeding by hand. A no-op once the final text landed.
        """
        if self._is_done:
            return
        await self._stop_flusher()
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # Let the interrupted call complete, so its message is not sent twice.
            await self._wait_or_timeout(inflight, self._options.final_timeout)
        if self._content.is_final:
            self._deadline = self._clock.monotonic() + self._options.final_timeout
        else:
            self._finalize(note if note is not None else ENDING_NOTES[ReplyStatus.INTERRUPTED])
        self._version += 1
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await self._flusher

    # State ----------------------------------------------------------------------------------

    def _finalize(self, note: str | None) -> None:
        self._content.finalize(note)
        self._deadline = self._clock.monotonic() + self._options.final_timeout

    def _touch(self) -> None:
        self._version += 1
        self._changed.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _render(self) -> list[str]:
        """The latest layout, cached until an event arrives or the shown seconds change."""
        seconds = self._content.thinking_seconds(self._clock.monotonic())
        key = (self._version, seconds)
        if self._cache is None or self._cache[0] != key:
            messages = self._layout.render(self._content.view(seconds))
            num_sent = len(self.shown)
            if len(messages) < num_sent:
                # Rare (rendered Markdown can shrink as it grows): a sink cannot delete, so a
                # message already sent keeps a placeholder rather than repeating earlier text.
                log.warning("layout shrank from %d to %d messages", num_sent, len(messages))
                messages = messages + [PLACEHOLDER] * (num_sent - len(messages))
            self._cache = (key, messages)
        return self._cache[1]

    # Flushing -------------------------------------------------------------------------------

    def _needs(self, index: int, text: str, final: bool) -> bool:
        shown = self._messages[index].shown if index in self._messages else None
        # Same text but not yet final: a draft-streaming sink must still send the real message.
        return shown is None or shown[0] != text or (final and not shown[1])

    def _is_final_text(self, index: int, desired: list[str]) -> bool:
        return self._content.is_final or index < len(desired) - 1

    def _first_pending(self, desired: list[str]) -> int | None:
        for index, text in enumerate(desired):
            if self._needs(index, text, self._is_final_text(index, desired)):
                return index
        return None

    def _due(self, index: int) -> float:
        message = self._messages.get(index, _Message())
        due = max(self._pacer.ready_at(), message.retry_at)
        if message.last_call is not None:
            due = max(due, message.last_call + self._options.edit_interval)
        return due

    async def _flush_loop(self) -> None:
        while True:
            self._changed.clear()
            now = self._clock.monotonic()
            desired = self._render()
            index = self._first_pending(desired)
            if index is None:
                if self._content.is_final:
                    self._is_done = True
                    return
                await self._wait_for_change(self._content.next_status_change(now))
                continue
            due = max(now, self._due(index))
            if self._content.is_final and due > self._deadline:
                raise self._delivery_failed(index)
            if due > now:
                # Events meanwhile need no wake-up: the state is rendered afresh at `due`.
                await self._clock.sleep(due - now)
            # Entered here, ended when the platform answers (_deliver), not when this returns.
            turn = await self._pacer.turn().__aenter__()
            desired = self._render()  # the newest text, now that it is this call's turn
            final = self._is_final_text(index, desired)
            if index < len(desired) and self._needs(index, desired[index], final):
                await self._deliver(turn, index, desired[index], final)
            else:
                turn.end()

    async def _deliver(self, turn: Turn, index: int, text: str, final: bool) -> None:
        message = self._messages.setdefault(index, _Message())
        if self._content.is_final:
            self._num_final_attempts += 1
        call = asyncio.ensure_future(self._sink.show(index, text, final=final))
        call.add_done_callback(functools.partial(self._record_landed, message, text, final))
        # The turn ends when the platform answered, even if the flusher is cancelled before.
        call.add_done_callback(lambda _: turn.end())
        self._inflight = call
        try:
            try:
                # Shielded: cancelling the flusher must not cut a platform call in half.
                await asyncio.shield(call)
            finally:
                # The interval runs from when the call ended: a library that waited out a 429
                # (discord.py does) returns late, and the next call must not follow at once.
                message.last_call = self._clock.monotonic()
        except NotModified:
            pass
        except (RetryAfter, TransientSinkError) as error:
            self._last_error = error
            if isinstance(error, TransientSinkError):
                message.failures += 1  # a 429 says how long to wait: no backoff to grow
            wait = self._policy.on_failure(error, message.failures, self._pacer)
            message.retry_at = self._clock.monotonic() + wait
            log.info("message %d: %r, trying again in %.1f s", index, error, wait)
            return
        message.failures = 0
        message.retry_at = -math.inf

    @staticmethod
    def _record_landed(
        message: _Message, text: str, final: bool, call: asyncio.Future[None]
    ) -> None:
        # A callback, so a call that completes after the flusher was cancelled still counts.
        if call.cancelled():
            return
        error = call.exception()
        if error is None or isinstance(error, NotModified):
            message.shown = (text, final)

    def _delivery_failed(self, index: int) -> DeliveryFailed:
        return DeliveryFailed(
            f"the final text of message {index} was not delivered within "
            f"{self._options.final_timeout:g} s ({self._num_final_attempts} attempts; "
            f"last error: {self._last_error!r})"
        )

    async def _wait_for_change(self, wake_at: float | None) -> None:
        """Until an event arrives or the clock reaches `wake_at`."""
        waiters = {asyncio.ensure_future(self._changed.wait())}
        if wake_at is not None:
            delay = max(0.0, wake_at - self._clock.monotonic())
            waiters.add(asyncio.ensure_future(self._clock.sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _wait_or_timeout(self, future: asyncio.Future[None], timeout: float) -> None:
        timer = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({future, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()

    async def _stop_flusher(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is None:
            return
        if not flusher.done():
            flusher.cancel()
            await asyncio.wait({flusher})
        if not flusher.cancelled():
            flusher.exception()  # retrieved: it was raised to the caller already
