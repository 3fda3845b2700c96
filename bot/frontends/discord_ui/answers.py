"""What a Discord answer does: /chat, DMs and mentions streamed back, its Stop, 🔄 and ➡ buttons."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import discord

from bot.chat.commands import (
    ANSWER_ALREADY_FINISHED,
    NOT_ALLOWED,
    ONLY_ASKER_OR_ADMIN_STOPS,
    only_the_asker_can,
    only_the_latest_can_be,
)
from bot.chat.service import ChatService, Reply
from bot.chat.turn import CONTINUE_TEXT
from bot.frontends.discord_ui.access import AccessPolicy, Caller
from bot.frontends.discord_ui.controls import answer_view, stop_view
from bot.frontends.discord_ui.interactions import (
    FAILED,
    author_of,
    caller_of,
    channel_of,
    key_of,
    reply,
    retract,
    tell,
)
from bot.frontends.discord_ui.replies import ReplyStreams
from bot.frontends.discord_ui.sink import DiscordSink
from bot.frontends.discord_ui.turns import TurnReader
from bot.types import ChatError, ChatKey, ReplyStatus

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000  # dialogues whose latest answer carries live buttons

RESTARTING = "The bot is restarting; please try again in a minute."


class Answers:
    """Starts answers from /chat, DMs and mentions, and acts on the buttons under them."""

    def __init__(
        self,
        service: ChatService,
        replies: ReplyStreams,
        access: AccessPolicy,
        turns: TurnReader,
        *,
        token_ttl: float,
        token_margin: float,
        regenerate_button: bool = False,
    ) -> None:
        self._service = service
        self._replies = replies
        self._access = access
        self._turns = turns
        self._token_ttl = token_ttl
        self._token_margin = token_margin
        self._is_accepting = True
        self._bot_user_id: int | None = None
        self._regenerate_button = regenerate_button
        self._latest: dict[ChatKey, int] = {}  # the message carrying 🔄, per dialogue

    def stop_accepting(self) -> None:
        """New commands and messages are refused from now on (answers being written go on)."""
        self._is_accepting = False

    def set_bot_user(self, user_id: int) -> None:
        self._bot_user_id = user_id

    async def admit(self, interaction: discord.Interaction, caller: Caller) -> bool:
        """Whether to go on: not while shutting down, and only for whom the allowlists let in."""
        if not self._is_accepting:
            await tell(interaction, RESTARTING)
            return False
        if not self._access.may_chat(caller):
            await tell(interaction, NOT_ALLOWED)
            return False
        return True

    async def chat(
        self,
        interaction: discord.Interaction,
        prompt: str,
        file: discord.Attachment | None = None,
    ) -> None:
        """/chat: the answer replaces the deferred "thinking…", in public."""
        caller = caller_of(interaction)
        if not await self.admit(interaction, caller):
            return
        key = key_of(interaction.channel_id, caller.user_id)
        try:
            # Checked before acknowledging: a refusal must be private, and once Discord shows
            # a public "thinking…" the answer can no longer become ephemeral.
            self._turns.check([file] if file is not None else [])
            self._service.check_message(key, prompt)
        except ChatError as exc:
            await tell(interaction, str(exc))
            return
        await interaction.response.defer(thinking=True)
        started = await self._start(
            key,
            lambda: self._turns.slash_turn(prompt, file),
            lambda note: retract(interaction, note),
        )
        if started is None:
            return
        deadline = interaction.created_at.timestamp() + self._token_ttl - self._token_margin
        sink = DiscordSink(
            channel_of(interaction),
            make_view=lambda: stop_view(caller.user_id),
            interaction=interaction,
            token_deadline=deadline,
        )
        self._stream(started, sink, interaction.channel_id)

    async def on_message(self, message: discord.Message) -> None:
        """Answer a direct message, or a guild message that @mentions the bot."""
        bot_user_id = self._bot_user_id  # a local: the lambda below keeps it known not None
        if message.author.bot or bot_user_id is None:
            return
        is_dm = message.guild is None
        if not is_dm and bot_user_id not in message.raw_mentions:
            return
        if not self._is_accepting:
            await reply(message, RESTARTING)
            return
        caller = author_of(message)
        if not self._access.may_chat(caller):
            if is_dm:  # in a guild channel a refusal would only add noise for everyone
                await reply(message, NOT_ALLOWED)
            return
        text = re.sub(rf"<@!?{bot_user_id}>", " ", message.content)
        key = key_of(message.channel.id, caller.user_id)
        started = await self._start(
            key,
            lambda: self._turns.turn(message, bot_user_id, text),
            lambda note: reply(message, note),
        )
        if started is None:
            return
        sink = DiscordSink(
            message.channel, make_view=lambda: stop_view(caller.user_id), reply_to=message
        )
        self._stream(started, sink, message.channel.id)

    async def on_stop_pressed(self, interaction: discord.Interaction, owner_id: int) -> None:
        """The Stop button: its owner (or an admin) stops that answer."""
        caller = caller_of(interaction)
        if caller.user_id != owner_id and not self._access.is_admin(caller):
            await tell(interaction, ONLY_ASKER_OR_ADMIN_STOPS)
            return
        if self._service.stop(key_of(interaction.channel_id, owner_id)):
            # Acknowledged without a change: the answer's own next edit shows that it stopped.
            await interaction.response.defer()
        else:
            await tell(interaction, ANSWER_ALREADY_FINISHED)

    async def on_answer_button(
        self, interaction: discord.Interaction, owner_id: int, *, is_continue: bool
    ) -> None:
        """🔄 (answer the question again) or ➡ (go on) under its owner's latest answer."""
        verb = "continue" if is_continue else "regenerate"
        caller = caller_of(interaction)
        if caller.user_id != owner_id or not self._access.may_chat(caller):
            await tell(interaction, only_the_asker_can(verb))
            return
        if not self._is_accepting:
            await tell(interaction, RESTARTING)
            return
        key = key_of(interaction.channel_id, owner_id)
        old = interaction.message
        if old is None or self._latest.get(key) != old.id:
            await tell(interaction, only_the_latest_can_be(verb))
            return
        try:
            if is_continue:
                started = await self._service.start_reply(key, CONTINUE_TEXT)
            else:
                started = await self._service.regenerate(key)
        except ChatError as exc:
            await tell(interaction, str(exc))
            return
        del self._latest[key]
        try:
            # Acknowledges the press; the old answer stays, without its buttons, and the new
            # one replies to it.
            await interaction.response.edit_message(view=None)
        except discord.HTTPException as exc:
            log.warning("discord: could not acknowledge a button press: %r", exc)
        sink = DiscordSink(
            channel_of(interaction), make_view=lambda: stop_view(owner_id), reply_to=old
        )
        self._stream(started, sink, interaction.channel_id)

    async def _start(
        self,
        key: ChatKey,
        read_turn: Callable[[], Awaitable[str]],
        refuse: Callable[[str], Awaitable[object]],
    ) -> Reply | None:
        """Read the user's turn and start its answer; None (the user told why) if it cannot.

        A ChatError (a file that is not UTF-8, the engine busy, a race) is said as it is;
        anything else is logged and the user gets the generic failure text.
        """
        try:
            return await self._service.start_reply(key, await read_turn())
        except ChatError as exc:
            await refuse(str(exc))
        except Exception:
            log.exception("discord: could not start a reply for %s", key)
            await refuse(FAILED)
        return None

    def _stream(self, started: Reply, sink: DiscordSink, channel_id: int | None) -> None:
        assert channel_id is not None

        async def offer_regenerate() -> None:
            final = await started.finished()
            if not self._is_accepting or final.status is ReplyStatus.INTERRUPTED:
                return
            view = answer_view(
                int(started.key.user_id), can_continue=final.status is ReplyStatus.LENGTH
            )
            message_id = await sink.mark_last(view)
            if message_id is not None:
                self._latest.pop(started.key, None)  # newest last: the oldest are forgotten first
                self._latest[started.key] = message_id
                if len(self._latest) > MAX_REMEMBERED:
                    del self._latest[next(iter(self._latest))]

        after = offer_regenerate if self._regenerate_button else None
        self._replies.start(started, sink, channel_id=channel_id, after=after)
