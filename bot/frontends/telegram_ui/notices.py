"""Short bot messages (command answers, refusals), paced like everything else in the chat."""

from __future__ import annotations

import logging

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import TelegramError

from bot.frontends.telegram_ui.errors import translated
from bot.frontends.telegram_ui.pacers import ChatPacers, TelegramPacer
from bot.frontends.telegram_ui.sink import ChatTarget, Limiter
from bot.render.pacing import Clock
from bot.render.stream import RetryAfter, TransientSinkError

log = logging.getLogger(__name__)


class Notices:
    """Sends a plain-text message in the chat's turn; retries after 429s and network errors."""

    def __init__(
        self,
        bot: Bot,
        pacers: ChatPacers,
        clock: Clock,
        *,
        limiter: Limiter | None = None,
        max_attempts: int = 5,
    ) -> None:
        self._bot = bot
        self._pacers = pacers
        self._clock = clock
        self._limiter = limiter
        self._max_attempts = max_attempts

    async def send(
        self,
        target: ChatTarget,
        text: str,
        *,
        is_group: bool,
        markup: InlineKeyboardMarkup | None = None,
        pacer: TelegramPacer | None = None,
    ) -> Message | None:
        """Send `text` (as a reply to target.reply_to); None if it could not be sent."""
        if pacer is not None:
            return await self._send(pacer, target, text, markup)
        with self._pacers.lease(target.chat_id, is_group=is_group) as leased:
            return await self._send(leased, target, text, markup)

    async def _send(
        self,
        pacer: TelegramPacer,
        target: ChatTarget,
        text: str,
        markup: InlineKeyboardMarkup | None,
    ) -> Message | None:
        reply = None
        if target.reply_to is not None:
            reply = ReplyParameters(target.reply_to, allow_sending_without_reply=True)
        for attempt in range(1, self._max_attempts + 1):
            await pacer.acquire()
            try:
                async with pacer.sending():
                    if self._limiter is not None:
                        await self._limiter.acquire()
                    return await translated(
                        self._bot.send_message(
                            target.chat_id,
                            text,
                            reply_parameters=reply,
                            reply_markup=markup,
                            message_thread_id=target.thread_id,
                        )
                    )
            except RetryAfter as error:
                pacer.defer(error.seconds)
            except TransientSinkError as error:
                log.info("chat %s: notice failed (%s), attempt %d", target.chat_id, error, attempt)
                await self._clock.sleep(min(10.0, 0.5 * 2 ** (attempt - 1)))
            except TelegramError as error:
                # Blocked by the user, chat gone, ...: nothing to retry.
                log.info("chat %s: notice not sent: %s", target.chat_id, error.message)
                return None
        log.warning("chat %s: notice failed %d times; dropped", target.chat_id, self._max_attempts)
        return None
