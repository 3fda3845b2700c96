"""What a Discord message brings into the user's turn: the message it replies to, its files."""

from __future__ import annotations

import logging
import re

import discord

from bot.chat.turn import Quote, TextFile, TurnComposer
from bot.types import ChatError

log = logging.getLogger(__name__)

DOWNLOAD_FAILED = "I couldn't download that file from Discord; please send it again."


class TurnReader:
    """Builds the turn's text from a message: its referenced message and its attachments."""

    def __init__(self, composer: TurnComposer) -> None:
        self._composer = composer

    async def turn(self, message: discord.Message, bot_user_id: int, text: str) -> str:
        """The user's turn for `message` (whose own text is `text`); ChatError if refused."""
        attachments = list(message.attachments)
        self.check(attachments)
        files = [await self._read(attachment) for attachment in attachments]
        quote = self._quote(message, bot_user_id)
        return self._composer.compose(text, quote=quote, files=files)

    def check(self, attachments: list[discord.Attachment]) -> None:
        """ChatError unless every attachment is a readable text file: all before any download."""
        for attachment in attachments:
            self._composer.check_file(attachment.filename, attachment.content_type, attachment.size)

    async def slash_turn(self, text: str, attachment: discord.Attachment | None) -> str:
        """The turn of /chat: the prompt and the attached file, if any (checked beforehand)."""
        files = [await self._read(attachment)] if attachment is not None else []
        return self._composer.compose(text, files=files)

    def _quote(self, message: discord.Message, bot_user_id: int) -> Quote | None:
        reference = message.reference
        replied = reference.resolved if reference is not None else None
        if not isinstance(replied, discord.Message):
            return None  # not a reply, or the message was deleted
        if replied.author.id == bot_user_id:
            return self._composer.quote(_without_reasoning(replied.content), "assistant")
        # A mention of the bot only said who was asked.
        text = re.sub(rf"<@!?{bot_user_id}>", " ", replied.content).strip()
        if replied.author.id == message.author.id:
            return self._composer.quote(text, "user")
        return self._composer.quote(text, "other", replied.author.display_name)

    async def _read(self, attachment: discord.Attachment) -> TextFile:
        try:
            data = await attachment.read()
        except discord.HTTPException as error:
            log.warning("discord: attachment download failed: %r", error)
            raise ChatError(DOWNLOAD_FAILED) from None
        return self._composer.read_file(attachment.filename, data)


def _without_reasoning(content: str) -> str:
    """A bot answer without the quoted reasoning it starts with (the answer is what counts)."""
    lines = content.splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith(">"):
        start += 1
    return "\n".join(lines[start:]) if start < len(lines) else content
