"""python-telegram-bot errors -> what the render layer understands (429, transient, success)."""

from __future__ import annotations

import datetime as dtm
import warnings
from collections.abc import Awaitable
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.error import RetryAfter as TelegramRetryAfter

from bot.render.delivery import RetryAfter, TransientSinkError

T = TypeVar("T")


def retry_after_seconds(error: TelegramRetryAfter) -> float:
    """The wait a 429 asks for, whether PTB gives it as int or timedelta."""
    with warnings.catch_warnings():
        # PTB 22 warns on reading it as int unless PTB_TIMEDELTA is set; either form is fine.
        warnings.simplefilter("ignore")
        value = error.retry_after
    if isinstance(value, dtm.timedelta):
        return value.total_seconds()
    return float(value)


def is_not_modified(error: BadRequest) -> bool:
    return "message is not modified" in error.message.lower()


def is_entity_error(error: BadRequest) -> bool:
    return "can't parse entities" in error.message.lower()


def is_message_gone(error: BadRequest) -> bool:
    """The message to edit was deleted (by the user) or can no longer be edited."""
    text = error.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text


async def translated(call: Awaitable[T]) -> T:
    """Await a Bot API call; 429 -> render RetryAfter, timeouts/5xx -> TransientSinkError.

    BadRequest (a NetworkError subclass in PTB) and Forbidden pass through unchanged: the caller
    decides what they mean.
    """
    try:
        return await call
    except TelegramRetryAfter as error:
        raise RetryAfter(retry_after_seconds(error)) from None
    except BadRequest:
        raise
    except TimedOut:
        raise TransientSinkError("Telegram timed out", kind="timeout") from None
    except NetworkError as error:
        raise TransientSinkError(f"Telegram network error: {error.message}") from None
