"""TelegramSink: shows one reply's messages in one chat (drafts while streaming, or send + edit)."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, EndPointNotFound, TelegramError

from bot.frontends.telegram_ui.errors import (
    is_entity_error,
    is_message_gone,
    is_not_modified,
    translated,
)
from bot.render.delivery import DeliveryRefused, TransientSinkError

log = logging.getLogger(__name__)

_TAG = re.compile(r"<[^>]*>")
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def html_to_plain(text: str) -> str:
    """What Telegram would show for our HTML, as plain text (the fallback when it refuses it)."""
    return html.unescape(_TAG.sub("", text))


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """Where a reply goes: the chat, the user's message it answers, the forum topic."""

    chat_id: int
    reply_to: int | None = None
    thread_id: int | None = None


class TelegramSink:
    """A MessageSink for one reply.

    With `draft_base` set (private chats), text that is still changing is streamed with
    sendMessageDraft (draft id `draft_base + index`) and each message is sent for real once
    final. Without it, or once the server refuses drafts, messages are sent and then edited,
    with `stop_markup` (the Stop button) under the text while it changes. Text Telegram cannot
    parse is sent again as plain text on the next call: it is never dropped. Each method
    makes one Bot API call (the caller holds the chat's turn) and translates its errors.
    """

    def __init__(
        self,
        bot: Bot,
        target: ChatTarget,
        *,
        draft_base: int | None = None,
        stop_markup: InlineKeyboardMarkup | None = None,
        on_drafts_refused: Callable[[bool], None] | None = None,
        on_first_message: Callable[[int], None] | None = None,
    ) -> None:
        self._bot = bot
        self._target = target
        self._draft_base = draft_base
        self._stop_markup = stop_markup
        self._on_drafts_refused = on_drafts_refused
        self._on_first_message = on_first_message  # told the id of message 0 once it is sent
        self._message_ids: dict[int, int] = {}
        self._plain: set[int] = set()  # messages Telegram refused as HTML: plain from then on

    @property
    def message_ids(self) -> dict[int, int]:
        """Telegram message id of each message index sent so far."""
        return dict(self._message_ids)

    @property
    def is_drafting(self) -> bool:
        return self._draft_base is not None

    async def show(self, index: int, text: str, *, final: bool) -> None:
        """Send, draft or edit message `index` (see MessageSink)."""
        try:
            if self._draft_base is not None and not final and index not in self._message_ids:
                await self._draft(index, text)
            elif index in self._message_ids:
                await self._edit(index, text, None if final else self._stop_markup)
            else:
                await self._send(index, text, None if final else self._stop_markup)
        except TelegramError as error:
            # What the calls let through (429s, network errors, HTML and deleted messages are
            # handled there): blocked by the user, chat gone, no right to write.
            raise DeliveryRefused(error.message) from None

    # Calls ------------------------------------------------------------------------------------

    async def _draft(self, index: int, text: str) -> None:
        assert self._draft_base is not None
        body, mode = self._body(index, text)
        try:
            await translated(
                self._bot.send_message_draft(
                    self._target.chat_id,
                    self._draft_base + index,
                    body,
                    parse_mode=mode,
                    message_thread_id=self._target.thread_id,
                )
            )
        except BadRequest as error:
            if is_entity_error(error):
                self._fall_back_to_plain(index)
            self._refuse_drafts(error.message, everywhere=False)
        except EndPointNotFound:
            self._refuse_drafts("the server has no sendMessageDraft", everywhere=True)

    async def _send(self, index: int, text: str, markup: InlineKeyboardMarkup | None) -> None:
        body, mode = self._body(index, text)
        reply = None
        if index == 0 and self._target.reply_to is not None:
            reply = ReplyParameters(self._target.reply_to, allow_sending_without_reply=True)
        try:
            message = await translated(
                self._bot.send_message(
                    self._target.chat_id,
                    body,
                    parse_mode=mode,
                    reply_markup=markup,
                    reply_parameters=reply,
                    message_thread_id=self._target.thread_id,
                    link_preview_options=_NO_PREVIEW,
                )
            )
        except BadRequest as error:
            if not is_entity_error(error):
                raise
            self._fall_back_to_plain(index)
        self._message_ids[index] = message.message_id
        if index == 0 and self._on_first_message is not None:
            self._on_first_message(message.message_id)

    async def _edit(self, index: int, text: str, markup: InlineKeyboardMarkup | None) -> None:
        body, mode = self._body(index, text)
        try:
            await translated(
                self._bot.edit_message_text(
                    body,
                    chat_id=self._target.chat_id,
                    message_id=self._message_ids[index],
                    parse_mode=mode,
                    reply_markup=markup,
                    link_preview_options=_NO_PREVIEW,
                )
            )
        except BadRequest as error:
            if is_not_modified(error):
                return
            if is_entity_error(error):
                self._fall_back_to_plain(index)
            if is_message_gone(error):
                # Deleted by the user: the next call sends the text as a new message.
                del self._message_ids[index]
                raise TransientSinkError("the message was deleted; sending it again") from None
            raise

    async def mark_last(self, markup: InlineKeyboardMarkup) -> int | None:
        """Put `markup` under the last message once the answer is final; returns its id.

        Call it in the chat's turn, like every other call of the chat.
        """
        if not self._message_ids:
            return None
        message_id = self._message_ids[max(self._message_ids)]
        try:
            await self._bot.edit_message_reply_markup(
                chat_id=self._target.chat_id, message_id=message_id, reply_markup=markup
            )
        except TelegramError as error:
            log.info("message %d: buttons not added: %s", message_id, error.message)
            return None
        return message_id

    # Helpers ----------------------------------------------------------------------------------

    def _body(self, index: int, text: str) -> tuple[str, str | None]:
        if index in self._plain:
            return html_to_plain(text), None
        return text, ParseMode.HTML

    def _fall_back_to_plain(self, index: int) -> None:
        # Retried through the renderer (next paced slot), not at once: the refused call may
        # have counted against this chat's flood limit.
        log.warning("message %d: Telegram refused its HTML; sending it as plain text", index)
        self._plain.add(index)
        raise TransientSinkError("Telegram could not parse the HTML; resending as plain text")

    def _refuse_drafts(self, reason: str, *, everywhere: bool) -> None:
        log.info("drafts refused (%s); sending and editing messages instead", reason)
        self._draft_base = None
        if self._on_drafts_refused is not None:
            self._on_drafts_refused(everywhere)
        raise TransientSinkError("drafts refused; sending a message instead")
