"""Who may use the bot, and which group messages are meant for it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Message, MessageEntity

from bot.config import TelegramSettings


class Access:
    """Who may use the bot where: `admins`, `allowed_users` and `allowed_chats` of [telegram].

    Each non-empty list must let the message through (an empty one restricts nothing); admins
    are always allowed. The lists are read on every call, so a config reload applies at once.
    """

    def __init__(self, settings: Callable[[], TelegramSettings]) -> None:
        self._settings = settings

    def is_admin(self, user_id: int) -> bool:
        return user_id in self._settings().admins

    def is_allowed(self, user_id: int, chat_id: int | None = None) -> bool:
        """`chat_id` None: only the user is judged (a private chat's id is its user's id)."""
        settings = self._settings()
        if user_id in settings.admins:
            return True
        if settings.allowed_users and user_id not in settings.allowed_users:
            return False
        chat = user_id if chat_id is None else chat_id
        return not settings.allowed_chats or chat in settings.allowed_chats


def is_open_to_everyone(settings: TelegramSettings) -> bool:
    return not (settings.allowed_users or settings.allowed_chats)


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
