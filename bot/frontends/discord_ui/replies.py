"""Runs each reply's StreamRenderer as a task, one ChatPacer per channel; lands all at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.chat.service import Reply
from bot.metrics import PlatformErrorKind
from bot.render.layout import DiscordLayout, ReasoningMode
from bot.render.pacing import ChatPacer, Clock
from bot.render.stream import MessageSink, RetryAfter, StreamRenderer, TransientSinkError

log = logging.getLogger(__name__)


class ReplyStreams:
    """Streams replies into Discord messages and tracks them until their final text landed.

    Every message of a reply is edited at most once per `edit_interval`; the calls of all
    replies in one channel share that channel's pacer (at least `channel_gap` seconds apart,
    optionally at most `channel_calls` per `channel_period`), so one busy channel never slows
    another. Discord's own per-route limits need no guess here: discord.py reads them from
    every response's rate-limit headers and waits before a bucket runs dry.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        reasoning: ReasoningMode,
        edit_interval: float,
        channel_gap: float,
        channel_calls: int | None,
        channel_period: float,
        final_timeout: float,
        on_error: Callable[[PlatformErrorKind], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_error = on_error
        self._reasoning = reasoning
        self._edit_interval = edit_interval
        self._channel_gap = channel_gap
        self._channel_calls = channel_calls
        self._channel_period = channel_period
        self._final_timeout = final_timeout
        self._pacers: dict[int, ChatPacer] = {}
        self._running: dict[asyncio.Task[None], tuple[Reply, int]] = {}  # -> reply, channel

    def set_edit_interval(self, seconds: float) -> None:
        """A reloaded edit interval: for answers started from now on."""
        self._edit_interval = seconds

    @property
    def num_running(self) -> int:
        return len(self._running)

    def start(
        self,
        reply: Reply,
        sink: MessageSink,
        *,
        channel_id: int,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> asyncio.Task[None]:
        """Stream `reply` through `sink` in the background; then `after` (in a paced slot)."""
        if self._on_error is not None:
            sink = _CountingSink(sink, self._on_error)
        renderer = StreamRenderer(
            sink,
            DiscordLayout(self._reasoning),
            clock=self._clock,
            pacer=self._pacer(channel_id),
            edit_interval=self._edit_interval,
            final_timeout=self._final_timeout,
        )
        task = asyncio.create_task(
            self._run(renderer, reply, self._pacer(channel_id), after),
            name=f"discord reply {reply.key}",
        )
        self._running[task] = (reply, channel_id)
        task.add_done_callback(self._forget)
        return task

    async def close(self) -> None:
        """Cut every answer short (stored as interrupted) and wait until its final text landed."""
        for reply, _ in list(self._running.values()):
            reply.interrupt()
        tasks = list(self._running)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self._final_timeout + 1.0)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d answers did not land their final text before shutdown", len(late))
            await asyncio.wait(late)

    def _pacer(self, channel_id: int) -> ChatPacer:
        pacer = self._pacers.get(channel_id)
        if pacer is None:
            self._forget_quiet_channels()
            pacer = self._pacers[channel_id] = ChatPacer(
                self._clock,
                min_interval=self._channel_gap,
                max_calls=self._channel_calls,
                per_seconds=self._channel_period,
            )
        return pacer

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    def _forget_quiet_channels(self) -> None:
        """Drop the pacers of channels with no answer running and no call in the last period."""
        busy = {channel_id for _, channel_id in self._running.values()}
        horizon = self._clock.monotonic() - self._channel_period
        for channel_id in [c for c in self._pacers if c not in busy]:
            if self._pacers[channel_id].ready_at() < horizon:
                del self._pacers[channel_id]

    async def _run(
        self,
        renderer: StreamRenderer,
        reply: Reply,
        pacer: ChatPacer,
        after: Callable[[], Awaitable[None]] | None,
    ) -> None:
        try:
            await renderer.run(reply)
            if after is not None:
                await pacer.acquire()
                await after()
        except Exception:
            # The answer can no longer be shown (a message gone for good, permissions lost):
            # stop spending the GPU on it. What was generated is stored all the same.
            log.exception("reply %s: cannot show the answer on Discord; stopping it", reply.key)
            reply.stop()


class _CountingSink:
    """A sink that counts the platform failures it passes on (for bot_platform_errors_total)."""

    def __init__(self, sink: MessageSink, on_error: Callable[[PlatformErrorKind], None]) -> None:
        self._sink = sink
        self._on_error = on_error

    async def show(self, index: int, text: str, *, final: bool) -> None:
        try:
            await self._sink.show(index, text, final=final)
        except RetryAfter:
            self._on_error(PlatformErrorKind.RATE_LIMITED)
            raise
        except TransientSinkError as error:
            self._on_error(getattr(error, "kind", PlatformErrorKind.OTHER))
            raise
