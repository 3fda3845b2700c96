"""Runs each reply's StreamRenderer as a task, one ChatPacer per channel; lands all at close."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from bot.chat.service import Reply
from bot.metrics import PlatformErrorKind
from bot.render.delivery import DeliveryOptions, MessageSink, RetryAfter, TransientSinkError
from bot.render.layout import DiscordLayout, ReasoningMode
from bot.render.pacing import ChatPacers, Clock
from bot.render.replies import ReplyTracker, render_reply
from bot.render.stream import StreamRenderer

log = logging.getLogger(__name__)


class ReplyStreams:
    """Streams replies into Discord messages and tracks them until their final text landed.

    Every message of a reply is edited at most once per `edit_interval`; the calls of all
    replies in one channel go through that channel's pacer, one at a time, `channel_gap`
    seconds after the previous one was answered (optionally at most `channel_calls` per
    `channel_period`), so one busy channel never slows another. Discord's own per-route
    limits need no guess here: discord.py reads them from every response's rate-limit
    headers and waits before a bucket runs dry.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        reasoning: ReasoningMode,
        options: DeliveryOptions,
        channel_gap: float,
        channel_calls: int | None,
        channel_period: float,
        on_error: Callable[[PlatformErrorKind], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_error = on_error
        self._reasoning = reasoning
        self._options = options
        self._pacers = ChatPacers(
            clock, min_interval=channel_gap, group_calls=channel_calls, group_window=channel_period
        )
        self._tracker = ReplyTracker()

    def set_edit_interval(self, seconds: float) -> None:
        """A reloaded edit interval: for answers started from now on."""
        self._options = dataclasses.replace(self._options, edit_interval=seconds)

    @property
    def num_running(self) -> int:
        return self._tracker.num_open

    def start(
        self,
        reply: Reply,
        sink: MessageSink,
        *,
        channel_id: int,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> asyncio.Task[None]:
        """Stream `reply` through `sink` in the background; then `after` (in a paced turn)."""
        if self._on_error is not None:
            sink = _CountingSink(sink, self._on_error)
        show = self._show(reply, sink, channel_id, after)
        return self._tracker.start(reply, show, name=f"discord reply {reply.key}")

    async def close(self) -> None:
        """Cut every answer short (stored as interrupted) and wait until its final text landed."""
        await self._tracker.close(timeout=self._options.final_timeout + 1.0)

    async def _show(
        self,
        reply: Reply,
        sink: MessageSink,
        channel_id: int,
        after: Callable[[], Awaitable[None]] | None,
    ) -> None:
        # Every channel gets the channel budget: Discord has no private/group distinction here.
        with self._pacers.lease(channel_id, is_group=True) as pacer:
            renderer = StreamRenderer(
                sink,
                DiscordLayout(self._reasoning),
                clock=self._clock,
                pacer=pacer,
                options=self._options,
            )
            landed = await render_reply(renderer, reply, reply, name=f"reply {reply.key}")
            if landed and after is not None:
                try:
                    async with pacer.turn():
                        await after()
                except Exception:
                    log.exception("reply %s: the buttons under the answer failed", reply.key)


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
            self._on_error(PlatformErrorKind(error.kind))
            raise
