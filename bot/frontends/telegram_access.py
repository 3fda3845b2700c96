"""Who may use the bot, and which group messages are meant for it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message, MessageEntity


@dataclass(frozen=True)
class Access:
    """`allowed_users` empty = everyone; admins are always allowed."""

    admins: frozenset[int]
    allowed_users: frozenset[int]

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admins

    def is_allowed(self, user_id: int) -> bool:
        return not self.allowed_users or user_id in self.allowed_users or user_id in self.admins


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
