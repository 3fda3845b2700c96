"""What sinks say about a platform call, and the one policy for retrying it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from bot.render.pacing import ChatPacer, Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

# The `kind` label of bot_platform_errors_total (PlatformErrorKind's values).
TransientKind = Literal["network", "timeout", "server_error", "other"]


@dataclass(frozen=True)
class DeliveryOptions:
    """How replies are delivered; the defaults of config, front-ends and renderer live here."""

    edit_interval: float = 1.0  # seconds between two edits of one message
    tick_interval: float = 5.0  # the "thinking… N s" status moves in steps of this
    final_timeout: float = 120.0  # retrying the final text (429s, network errors) this long

    def __post_init__(self) -> None:
        if self.edit_interval <= 0 or self.tick_interval <= 0 or self.final_timeout <= 0:
            raise ValueError("intervals and timeout must be positive")


class RetryAfter(Exception):
    """The platform answered 429: try again after `seconds` (raised by sinks)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"flood control: retry after {seconds} s")
        self.seconds = float(seconds)


class TransientSinkError(Exception):
    """A network error, a timeout or a 5xx: the same call may succeed later (raised by sinks).

    `kind` says which, for the platform-error metric.
    """

    def __init__(self, message: str, *, kind: TransientKind = "network") -> None:
        super().__init__(message)
        self.kind: TransientKind = kind


class NotModified(Exception):
    """The platform already shows this text; a sink may raise it, it counts as delivered."""


class DeliveryFailed(Exception):
    """A text could not be delivered in the time (or the attempts) allowed."""


class DeliveryRefused(Exception):
    """The platform refuses this reply for good (raised by sinks).

    The user blocked the bot, the chat or channel is gone, the bot lost its permission to
    write there: retrying cannot help, and no one will see the rest of the answer.
    """


class MessageSink(Protocol):
    """The platform-specific part: shows one message of one reply."""

    async def show(self, index: int, text: str, *, final: bool) -> None:
        """Show `text` as message `index` of this reply: send it if new, else edit it.

        `final`: this text will not change again (a draft-streaming sink sends the real
        message now). Raise RetryAfter on 429 and TransientSinkError on network errors and
        5xx; 'message is not modified' is success (return, or raise NotModified).
        """
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call may be tried again: streamed replies and one-off notices alike.

    A 429 holds back the whole chat for as long as the platform asked; a transient error
    waits a backoff that doubles from `first_backoff` up to `max_backoff`. A one-off call
    (`call`) gives up after `max_attempts`; a reply's final text is bounded by its deadline.
    """

    first_backoff: float = 0.5
    max_backoff: float = 10.0
    max_attempts: int = 5

    def wait_after(self, error: RetryAfter | TransientSinkError, failures: int) -> float:
        """Seconds before the call may be tried again after its `failures`-th failure in a row."""
        if isinstance(error, RetryAfter):
            return error.seconds
        return min(self.max_backoff, self.first_backoff * 2 ** (failures - 1))

    def on_failure(
        self, error: RetryAfter | TransientSinkError, failures: int, pacer: ChatPacer
    ) -> float:
        """Apply the policy to a failed call of `pacer`'s chat; returns the wait for this call."""
        if isinstance(error, RetryAfter):
            pacer.defer(error.seconds)  # the platform limits the chat, not this one message
        return self.wait_after(error, failures)

    async def call(self, pacer: ChatPacer, clock: Clock, send: Callable[[], Awaitable[T]]) -> T:
        """Make `send()` in the chat's turns until it succeeds; DeliveryFailed after max_attempts.

        Errors other than RetryAfter and TransientSinkError pass through: nothing to retry.
        """
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with pacer.turn():
                    return await send()
            except (RetryAfter, TransientSinkError) as error:
                last = error
                wait = self.on_failure(error, attempt, pacer)
                log.info("call failed (%s), attempt %d; again in %.1f s", error, attempt, wait)
                if isinstance(error, TransientSinkError) and attempt < self.max_attempts:
                    await clock.sleep(wait)  # a 429's wait is the pacer's (the chat's turn)
        raise DeliveryFailed(f"{self.max_attempts} attempts failed; last error: {last!r}")
