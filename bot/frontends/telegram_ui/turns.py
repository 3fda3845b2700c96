"""What a Telegram message brings into the user's turn: the replied-to or quoted text, a file."""

from __future__ import annotations

import logging

from telegram import Bot, Message, MessageEntity, User
from telegram.error import TelegramError

from bot.chat.turn import Quote, TextFile, TurnComposer
from bot.types import ChatError

log = logging.getLogger(__name__)

DOWNLOAD_FAILED = "I couldn't download that file from Telegram; please send it again."


class TurnReader:
    """Builds the turn's text from a message: its quote or replied-to message, its document."""

    def __init__(self, bot: Bot, composer: TurnComposer) -> None:
        self._bot = bot
        self._composer = composer

    async def turn(self, message: Message, user: User, text: str) -> str:
        """The user's turn for `message` (whose own text is `text`); ChatError if refused."""
        files = [await self._file(message)] if message.document is not None else []
        return self._composer.compose(text, quote=self._quote(message, user), files=files)

    def _quote(self, message: Message, user: User) -> Quote | None:
        replied = message.reply_to_message
        # A quote reply carries the selected part; else the whole replied-to text or caption.
        text = message.quote.text if message.quote is not None else None
        if text is None and replied is not None:
            text = replied.text or replied.caption
        if not text:
            return None
        author = replied.from_user if replied is not None else None
        if author is not None and author.id == self._bot.id:
            if message.quote is None and replied is not None:
                text = _without_reasoning(replied, text)
            return self._composer.quote(text, "assistant")
        if author is not None and author.id == user.id:
            return self._composer.quote(text, "user")
        return self._composer.quote(text, "other", author.first_name if author else "")

    async def _file(self, message: Message) -> TextFile:
        document = message.document
        assert document is not None
        name = document.file_name or "file"
        # Checked before downloading: a refused file is never fetched.
        self._composer.check_file(name, document.mime_type, document.file_size)
        try:
            file = await self._bot.get_file(document.file_id)
            data = bytes(await file.download_as_bytearray())
        except TelegramError as error:
            log.warning("chat %s: file download failed: %s", message.chat.id, error.message)
            raise ChatError(DOWNLOAD_FAILED) from None
        return self._composer.read_file(name, data)


def _without_reasoning(message: Message, text: str) -> str:
    """A bot answer without the quoted reasoning it starts with (the answer is what counts)."""
    for entity in message.entities:
        if entity.offset == 0 and entity.type in (
            MessageEntity.BLOCKQUOTE,
            MessageEntity.EXPANDABLE_BLOCKQUOTE,
        ):
            reasoning = message.parse_entity(entity)
            rest = text.removeprefix(reasoning).strip()
            return rest or text
    return text
