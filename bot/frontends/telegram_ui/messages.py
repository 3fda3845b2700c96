"""Telegram messages in our vocabulary: whose dialogue, where to answer, what the turn says.

Which dialogue a message belongs to, where its answer goes, whether a group message is meant
for the bot, and the user's turn it brings (the replied-to or quoted text, a file).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram import Bot, Message, MessageEntity, User
from telegram.constants import ChatType
from telegram.error import TelegramError

from bot.chat.turn import Quote, TextFile, TurnComposer
from bot.frontends.telegram_ui.sink import ChatTarget
from bot.types import ChatError, ChatKey

log = logging.getLogger(__name__)

PLATFORM = "telegram"
DOWNLOAD_FAILED = "I couldn't download that file from Telegram; please send it again."


def key_of(message: Message, user: User) -> ChatKey:
    """Each user has their own dialogue in each chat (groups too)."""
    return ChatKey(platform=PLATFORM, chat_id=str(message.chat.id), user_id=str(user.id))


def target_of(message: Message) -> ChatTarget:
    """Answer in the message's chat (and forum topic), as a reply to it."""
    thread = message.message_thread_id if message.is_topic_message else None
    return ChatTarget(message.chat.id, reply_to=message.message_id, thread_id=thread)


def is_group_chat(message: Message) -> bool:
    return message.chat.type != ChatType.PRIVATE


def argument_text(message: Message) -> str:
    """Everything after the command word, line breaks kept (context.args loses them)."""
    text = message.text or ""
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


@dataclass(frozen=True)
class BotIdentity:
    """The bot's own id and @username (from getMe)."""

    id: int
    username: str

    def mentions(self, message: Message) -> bool:
        """Whether the message's text or caption mentions the bot."""
        entities = message.parse_entities() if message.text else message.parse_caption_entities()
        for entity, value in entities.items():
            if entity.type == MessageEntity.MENTION and value[1:].lower() == self.username.lower():
                return True
            if (
                entity.type == MessageEntity.TEXT_MENTION
                and entity.user is not None
                and entity.user.id == self.id
            ):
                return True
        return False

    def is_reply_to_me(self, message: Message) -> bool:
        replied = message.reply_to_message
        author = replied.from_user if replied is not None else None
        return author is not None and author.id == self.id

    def is_addressed(self, message: Message) -> bool:
        """A group message meant for the bot: it mentions the bot or replies to one of its own."""
        return self.mentions(message) or self.is_reply_to_me(message)

    def is_command_for_me(self, message: Message) -> bool:
        """A command in a group names its bot (/command@thisbot): groups see every bot's."""
        entity = next((e for e in message.entities if e.type == MessageEntity.BOT_COMMAND), None)
        command = message.parse_entity(entity) if entity is not None else ""
        _, _, username = command.partition("@")
        return username.lower() == self.username.lower()

    def strip_mention(self, text: str) -> str:
        """The text without '@botname' (the mention only says who is asked)."""
        pattern = re.compile(rf"[ \t]*@{re.escape(self.username)}\b[ \t]*", re.IGNORECASE)
        return pattern.sub(" ", text).strip()


def group_turn_text(message: Message, me: BotIdentity) -> str | None:
    """The question in a group message (or file caption) for the bot; None if not for the bot."""
    text = message.text if message.text is not None else message.caption
    if not me.is_addressed(message) or (text is None and message.document is None):
        return None
    return me.strip_mention(text or "")


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
