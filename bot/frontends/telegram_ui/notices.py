"""Short bot messages (command answers, refusals), paced like everything else in the chat."""

from __future__ import annotations

import logging

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import TelegramError

from bot.frontends.telegram_ui.errors import translated
from bot.frontends.telegram_ui.sink import ChatTarget
from bot.render.delivery import DeliveryFailed, RetryPolicy
from bot.render.pacing import ChatPacer, ChatPacers, Clock

log = logging.getLogger(__name__)


class Notices:
    """Sends a plain-text message in the chat's turn; retried as `policy` says."""

    def __init__(
        self,
        bot: Bot,
        pacers: ChatPacers,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._bot = bot
        self._pacers = pacers
        self._clock = clock
        self._policy = policy or RetryPolicy()

    async def send(
        self,
        target: ChatTarget,
        text: str,
        *,
        is_group: bool,
        markup: InlineKeyboardMarkup | None = None,
        pacer: ChatPacer | None = None,
    ) -> Message | None:
        """Send `text` (as a reply to target.reply_to); None if it could not be sent."""
        if pacer is not None:
            return await self._send(pacer, target, text, markup)
        with self._pacers.lease(target.chat_id, is_group=is_group) as leased:
            return await self._send(leased, target, text, markup)

    async def _send(
        self,
        pacer: ChatPacer,
        target: ChatTarget,
        text: str,
        markup: InlineKeyboardMarkup | None,
    ) -> Message | None:
        reply = None
        if target.reply_to is not None:
            reply = ReplyParameters(target.reply_to, allow_sending_without_reply=True)

        async def send() -> Message:
            return await translated(
                self._bot.send_message(
                    target.chat_id,
                    text,
                    reply_parameters=reply,
                    reply_markup=markup,
                    message_thread_id=target.thread_id,
                )
            )

        try:
            return await self._policy.call(pacer, self._clock, send)
        except DeliveryFailed as error:
            log.warning("chat %s: notice dropped: %s", target.chat_id, error)
        except TelegramError as error:
            # Blocked by the user, chat gone, ...: nothing to retry.
            log.info("chat %s: notice not sent: %s", target.chat_id, error.message)
        return None
