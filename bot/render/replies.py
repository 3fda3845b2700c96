"""The replies a front-end is showing: started, counted, and every one landed at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any, Protocol, TypeVar

from bot.render.delivery import DeliveryFailed, DeliveryRefused
from bot.render.stream import StreamRenderer
from bot.types import ReplyEvent

log = logging.getLogger(__name__)

R = TypeVar("R")


class Stoppable(Protocol):
    """What the tracker needs of a reply (bot.chat.reply.Reply is one)."""

    def interrupt(self) -> None:
        """End the answer now, stored and shown as interrupted."""

    def stop(self) -> None:
        """End the answer now, as if the user pressed Stop."""


async def render_reply(
    renderer: StreamRenderer,
    reply: Stoppable,
    events: AsyncIterator[ReplyEvent],
    *,
    shutdown_note: str | None = None,
    name: str = "reply",
) -> bool:
    """Show `events` through `renderer` until the final text landed; True if it did.

    Cancelled (shutdown gave up waiting for the stream): the text so far lands with
    `shutdown_note` (None: the usual "interrupted" note), then the cancellation goes on.
    If the answer can no longer be shown (blocked, a message gone for good, permissions
    lost), the model is stopped: no one would see the rest. What was generated is stored
    all the same. `name` says which reply in the log.
    """
    try:
        await renderer.run(events)
        return True
    except asyncio.CancelledError:
        reply.interrupt()
        await renderer.finish_now(shutdown_note)
        raise
    except DeliveryFailed as error:
        log.error("%s: final text not delivered: %s", name, error)
    except DeliveryRefused as error:
        # Expected in a bot's life (a user blocks it): a line, not a traceback.
        log.warning("%s: the platform refused it (%s); stopping the answer", name, error)
        reply.stop()
    except Exception:
        log.exception("%s: the answer cannot be shown; stopping it", name)
        reply.stop()
    return False


class ReplyTracker:
    """Runs each reply's showing as a task, counts them, and lands them all at `close`."""

    def __init__(self) -> None:
        self._open: dict[asyncio.Task[None], Stoppable] = {}
        self._num_starting = 0  # replies asked for whose stream has not begun yet
        self._is_closing = False

    @property
    def is_closing(self) -> bool:
        """`close` has begun: a reply started now is shown as interrupted."""
        return self._is_closing

    @property
    def num_open(self) -> int:
        """Replies being shown."""
        return len(self._open)

    async def starting(self, start: Awaitable[R]) -> R:
        """Await the start of a reply; `close` waits for it meanwhile."""
        self._num_starting += 1
        try:
            return await start
        finally:
            self._num_starting -= 1

    def start(
        self, reply: Stoppable, show: Coroutine[Any, Any, None], *, name: str
    ) -> asyncio.Task[None]:
        """Run `show` (which lands the reply's final text) as a task, until it ends."""
        task = asyncio.create_task(show, name=name)
        self._open[task] = reply
        task.add_done_callback(self._forget)
        return task

    async def close(self, *, timeout: float) -> None:
        """Cut every reply short (stored as interrupted) and wait until each landed its text.

        Replies still starting are waited for too. A task still open after `timeout` seconds
        (its stream never ended) is cancelled, which lands its text so far (render_reply).
        """
        self._is_closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._open or self._num_starting) and loop.time() < deadline:
            for reply in list(self._open.values()):
                reply.interrupt()
            if self._open:
                await asyncio.wait(list(self._open), timeout=deadline - loop.time())
            else:
                await asyncio.sleep(0.05)  # a reply still starting: it shows up in a moment
        late = [task for task in self._open if not task.done()]
        if late:
            log.warning("%d answers still open after %.0f s; cut off", len(late), timeout)
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=timeout)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._open.pop(task, None)
