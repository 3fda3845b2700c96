"""The Bot API HTTP client, counting what went wrong (for bot_platform_errors_total)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from bot.metrics import PlatformErrorKind

ErrorCounter = Callable[[PlatformErrorKind], None]


class CountingRequest(HTTPXRequest):
    """PTB's own HTTPX client; each 429, 5xx, timeout and network error is also counted.

    Counted here, under every Bot API call, so answers, notices, commands and polling are all
    seen without each caller having to report its own failures.
    """

    def __init__(self, on_error: ErrorCounter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_error = on_error

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            status, body = await super().do_request(*args, **kwargs)
        except TimedOut:
            self._on_error(PlatformErrorKind.TIMEOUT)
            raise
        except NetworkError:
            self._on_error(PlatformErrorKind.NETWORK)
            raise
        if status == 429:
            self._on_error(PlatformErrorKind.RATE_LIMITED)
        elif status >= 500:
            self._on_error(PlatformErrorKind.SERVER_ERROR)
        return status, body
