"""StreamRenderer: one reply's events -> paced sends and edits of its messages via a sink."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator
from typing import Protocol

from bot.render.layout import Layout, ReplyView
from bot.render.pacing import ChatPacer, Clock
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


class RetryAfter(Exception):
    """The platform answered 429: try again after `seconds` (raised by sinks)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"flood control: retry after {seconds} s")
        self.seconds = float(seconds)


class TransientSinkError(Exception):
    """A network error or a 5xx: the same call may succeed later (raised by sinks)."""


class NotModified(Exception):
    """The platform already shows this text; a sink may raise it, it counts as delivered."""


class DeliveryFailed(Exception):
    """The final text of a reply could not be delivered in the time allowed."""


class MessageSink(Protocol):
    """The platform-specific part: shows one message of one reply."""

    async def show(self, index: int, text: str, *, final: bool) -> None:
        """Show `text` as message `index` of this reply: send it if new, else edit it.

        `final`: this text will not change again (a draft-streaming sink sends the real
        message now). Raise RetryAfter on 429 and TransientSinkError on network errors and
        5xx; 'message is not modified' is success (return, or raise NotModified).
        """
        ...


def queue_status(position: int) -> str:
    return f"⏳ In queue: position {position}"


def thinking_status(seconds: int) -> str:
    return "💭 Thinking…" if seconds <= 0 else f"💭 Thinking… {seconds} s"


STARTING_STATUS = "⏳ Starting…"
PLACEHOLDER = "…"


class StreamRenderer:
    """Renders one reply into one or more messages while it streams, and lands its final text.

    Feed it events (`feed`, or `run` over an async iterator). A single flusher task pushes the
    latest layout through the sink: per message at most one call per `edit_interval`, every
    call through the chat's shared `pacer`, never a call that repeats what a message shows.
    The final text is retried after 429 (waiting as told) and transient errors (bounded
    backoff) until `final_timeout` seconds have passed, then DeliveryFailed is raised.
    """

    def __init__(
        self,
        sink: MessageSink,
        layout: Layout,
        *,
        clock: Clock,
        pacer: ChatPacer,
        edit_interval: float = 1.0,
        tick_interval: float = 5.0,
        final_timeout: float = 120.0,
        max_backoff: float = 10.0,
    ) -> None:
        if edit_interval <= 0 or tick_interval <= 0 or final_timeout <= 0 or max_backoff <= 0:
            raise ValueError("intervals, timeout and backoff must be positive")
        self._sink = sink
        self._layout = layout
        self._clock = clock
        self._pacer = pacer
        self._edit_interval = edit_interval
        self._tick_interval = tick_interval
        self._final_timeout = final_timeout
        self._max_backoff = max_backoff

        self._reasoning: list[str] = []
        self._answer: list[str] = []
        self._position: int | None = None
        self._thinking_since: float | None = None
        self._is_final = False
        self._note: str | None = None
        self._version = 0  # bumped by every event; keys the layout cache
        self._cache: tuple[tuple[int, int | None], list[str]] | None = None

        self._shown: dict[int, tuple[str, bool]] = {}  # index -> (text, final) that landed
        self._last_call: dict[int, float] = {}
        self._retry_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
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
        return [self._shown[i][0] for i in sorted(self._shown)]

    def feed(self, event: ReplyEvent) -> None:
        """Take one event; the flusher shows the new state within one interval."""
        if self._is_final:
            return
        now = self._clock.monotonic()
        if isinstance(event, Queued):
            self._position = event.position
        elif isinstance(event, Started):
            self._start_thinking(now)
        elif isinstance(event, ReasoningDelta):
            self._start_thinking(now)
            self._reasoning.append(event.text)
        elif isinstance(event, AnswerDelta):
            self._answer.append(event.text)
        elif isinstance(event, ReplyFinished):
            # The stored reply is authoritative where it has text.
            if event.reasoning:
                self._reasoning = [event.reasoning]
            if event.answer:
                self._answer = [event.answer]
            self._finalize(event.note or ENDING_NOTES.get(event.status))
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
                if self._is_final:
                    break
            if not self._is_final:
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
            await self._wait_or_timeout(inflight, self._final_timeout)
        if self._is_final:
            self._deadline = self._clock.monotonic() + self._final_timeout
        else:
            self._finalize(note if note is not None else ENDING_NOTES[ReplyStatus.INTERRUPTED])
        self._version += 1
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await self._flusher

    # State ----------------------------------------------------------------------------------

    def _start_thinking(self, now: float) -> None:
        if self._thinking_since is None:
            self._thinking_since = now

    def _finalize(self, note: str | None) -> None:
        self._is_final = True
        self._note = note
        self._deadline = self._clock.monotonic() + self._final_timeout

    def _touch(self) -> None:
        self._version += 1
        self._changed.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _thinking_seconds(self, now: float) -> int | None:
        """Seconds of thinking to show (in whole ticks), or None if no clock is shown."""
        if self._is_final or self._thinking_since is None or any(t.strip() for t in self._answer):
            return None
        ticks = (now - self._thinking_since) // self._tick_interval
        return int(ticks * self._tick_interval)

    def _next_status_change(self, now: float) -> float | None:
        if self._thinking_seconds(now) is None or self._thinking_since is None:
            return None
        ticks = (now - self._thinking_since) // self._tick_interval + 1
        return self._thinking_since + ticks * self._tick_interval

    def _view(self, seconds: int | None) -> ReplyView:
        answer = "".join(self._answer)
        status = None
        if not self._is_final and not answer.strip():
            if seconds is not None:
                status = thinking_status(seconds)
            elif self._position is not None:
                status = queue_status(self._position)
            else:
                status = STARTING_STATUS
        return ReplyView(
            reasoning="".join(self._reasoning),
            answer=answer,
            status=status,
            note=self._note if self._is_final else None,
            is_final=self._is_final,
        )

    def _render(self) -> list[str]:
        """The latest layout, cached until an event arrives or the shown seconds change."""
        seconds = self._thinking_seconds(self._clock.monotonic())
        key = (self._version, seconds)
        if self._cache is None or self._cache[0] != key:
            messages = self._layout.render(self._view(seconds))
            if len(messages) < len(self._shown):
                # Rare (rendered Markdown can shrink as it grows): a sink cannot delete, so a
                # message already sent keeps a placeholder rather than repeating earlier text.
                log.warning("layout shrank from %d to %d messages", len(self._shown), len(messages))
                messages = messages + [PLACEHOLDER] * (len(self._shown) - len(messages))
            self._cache = (key, messages)
        return self._cache[1]

    # Flushing -------------------------------------------------------------------------------

    def _needs(self, index: int, text: str, final: bool) -> bool:
        shown = self._shown.get(index)
        # Same text but not yet final: a draft-streaming sink must still send the real message.
        return shown is None or shown[0] != text or (final and not shown[1])

    def _is_final_text(self, index: int, desired: list[str]) -> bool:
        return self._is_final or index < len(desired) - 1

    def _first_pending(self, desired: list[str]) -> int | None:
        for index, text in enumerate(desired):
            if self._needs(index, text, self._is_final_text(index, desired)):
                return index
        return None

    def _due(self, index: int) -> float:
        due = self._pacer.ready_at()
        if index in self._last_call:
            due = max(due, self._last_call[index] + self._edit_interval)
        return max(due, self._retry_at.get(index, -math.inf))

    async def _flush_loop(self) -> None:
        while True:
            self._changed.clear()
            now = self._clock.monotonic()
            desired = self._render()
            index = self._first_pending(desired)
            if index is None:
                if self._is_final:
                    self._is_done = True
                    return
                await self._wait_for_change(self._next_status_change(now))
                continue
            due = max(now, self._due(index))
            if self._is_final and due > self._deadline:
                raise self._delivery_failed(index)
            if due > now:
                # Events meanwhile need no wake-up: the state is rendered afresh at `due`.
                await self._clock.sleep(due - now)
            await self._pacer.acquire()
            desired = self._render()
            if index < len(desired):
                final = self._is_final_text(index, desired)
                if self._needs(index, desired[index], final):
                    await self._deliver(index, desired[index], final)

    async def _deliver(self, index: int, text: str, final: bool) -> None:
        now = self._clock.monotonic()
        self._last_call[index] = now
        if self._is_final:
            self._num_final_attempts += 1
        call = asyncio.ensure_future(self._sink.show(index, text, final=final))
        call.add_done_callback(functools.partial(self._record_landed, index, text, final))
        self._inflight = call
        try:
            try:
                # Shielded: cancelling the flusher must not cut a platform call in half.
                await asyncio.shield(call)
            finally:
                # The interval runs from when the call ended: a library that waited out a 429
                # (discord.py does) returns late, and the next call must not follow at once.
                self._last_call[index] = self._clock.monotonic()
        except NotModified:
            pass
        except RetryAfter as exc:
            self._last_error = exc
            log.info("message %d: retry after %.1f s", index, exc.seconds)
            self._pacer.defer(exc.seconds)
            return
        except TransientSinkError as exc:
            self._last_error = exc
            failures = self._failures[index] = self._failures.get(index, 0) + 1
            backoff = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
            self._retry_at[index] = now + backoff
            log.info("message %d: %r, retrying in %.1f s", index, exc, backoff)
            return
        self._failures.pop(index, None)
        self._retry_at.pop(index, None)

    def _record_landed(
        self, index: int, text: str, final: bool, call: asyncio.Future[None]
    ) -> None:
        # A callback, so a call that completes after the flusher was cancelled still counts.
        if call.cancelled():
            return
        error = call.exception()
        if error is None or isinstance(error, NotModified):
            self._shown[index] = (text, final)

    def _delivery_failed(self, index: int) -> DeliveryFailed:
        return DeliveryFailed(
            f"the final text of message {index} was not delivered within "
            f"{self._final_timeout:g} s ({self._num_final_attempts} attempts; "
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
