"""What the Discord bot does: slash commands, DMs and mentions, the Stop button."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.chat.service import ChatService, Reply
from bot.chat.turn import CONTINUE_TEXT
from bot.frontends.discord_ui.access import ADMINS_ONLY, NOT_ALLOWED, AccessPolicy, Caller
from bot.frontends.discord_ui.controls import answer_view, stop_view
from bot.frontends.discord_ui.replies import ReplyStreams
from bot.frontends.discord_ui.sink import NO_MENTIONS, DiscordSink
from bot.frontends.discord_ui.turns import TurnReader
from bot.types import ChatError, ChatKey, ReplyStatus

if TYPE_CHECKING:
    from bot.reload import Reloader

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000  # dialogues whose latest answer carries live buttons

PLATFORM = "discord"
HELP = """**Commands**
`/chat prompt: [file:]` ask the model, optionally about a text file (or DM me, or @mention me)
`/stop` stop the answer being written for you here (or press its Stop button)
`/reset` start a new dialogue in this channel (the old one stays stored)
`/reset user:` start a new dialogue for someone else here (admins)
`/system` show this channel's system prompt
`/system text:` set it; `/system text:clear` restores the default (admins; anyone in a DM)
`/id` your user id and this channel's (and server's) id, for the bot's allowlist
`/reload` re-read the bot's config (configured admins)
`/help` this help
Reply to a message to ask about it; attach a text file (.txt, .md, .csv, code) to have me read it.
🔄 under my latest answer writes another; ➡ Continue goes on with one cut short.
Each person has their own dialogue in each channel."""
RELOAD_ADMINS_ONLY = "Only the bot's configured admins can reload its config."
ONLY_OWNER_STOPS = "Only the person who asked (or an admin) can stop this answer."
RESTARTING = "The bot is restarting; please try again in a minute."
FAILED = "Sorry, something went wrong. Please try again."
CLEAR_WORDS = frozenset({"clear", "default", "reset"})
MAX_SHOWN_PROMPT = 1800  # a shown system prompt must leave room in Discord's 2000 characters


class DiscordHandlers:
    """Turns Discord interactions and messages into ChatService calls; platform I/O only."""

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
        reloader: Reloader | None = None,
    ) -> None:
        self._reloader = reloader
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

    # Commands -----------------------------------------------------------------------------------

    def add_commands(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """Register /chat, /reset, /system, /stop, /id and /help on `tree`."""

        @tree.command(name="chat", description="Ask the model")
        @app_commands.describe(prompt="Your message", file="A text file to read with it")
        async def chat(
            interaction: discord.Interaction, prompt: str, file: discord.Attachment | None = None
        ) -> None:
            await self.chat(interaction, prompt, file)

        @tree.command(name="reset", description="Start a new dialogue in this channel")
        @app_commands.describe(user="Someone else whose dialogue to reset (admins only)")
        async def reset(interaction: discord.Interaction, user: discord.User | None = None) -> None:
            await self.reset(interaction, user)

        @tree.command(name="system", description="Show or set this channel's system prompt")
        @app_commands.describe(text="The new system prompt; 'clear' restores the default")
        async def system(interaction: discord.Interaction, text: str | None = None) -> None:
            await self.system(interaction, text)

        @tree.command(name="stop", description="Stop the answer being written for you here")
        async def stop(interaction: discord.Interaction) -> None:
            await self.stop(interaction)

        @tree.command(name="id", description="Show your user id and this channel's id")
        async def id_(interaction: discord.Interaction) -> None:
            await _tell(interaction, ids_text(interaction))

        @tree.command(name="reload", description="Re-read the bot's config file (admins)")
        async def reload(interaction: discord.Interaction) -> None:
            await self.reload(interaction)

        @tree.command(name="help", description="What this bot can do")
        async def help_(interaction: discord.Interaction) -> None:
            await _tell(interaction, HELP)

    async def chat(
        self,
        interaction: discord.Interaction,
        prompt: str,
        file: discord.Attachment | None = None,
    ) -> None:
        caller = _caller_of(interaction)
        if not await self._admit(interaction, caller):
            return
        key = _key(interaction.channel_id, caller.user_id)
        try:
            # Checked before acknowledging: a refusal must be private, and once Discord shows
            # a public "thinking…" the answer can no longer become ephemeral.
            self._turns.check([file] if file is not None else [])
            self._service.check_message(key, prompt)
        except ChatError as exc:
            await _tell(interaction, str(exc))
            return
        await interaction.response.defer(thinking=True)
        try:
            turn = await self._turns.slash_turn(prompt, file)
            reply = await self._service.start_reply(key, turn)
        except ChatError as exc:  # the file is not UTF-8, the engine is busy, or a race
            await _retract(interaction, str(exc))
            return
        except Exception:
            log.exception("discord: could not start a reply for %s", key)
            await _retract(interaction, FAILED)
            return
        deadline = interaction.created_at.timestamp() + self._token_ttl - self._token_margin
        sink = DiscordSink(
            _channel_of(interaction),
            make_view=lambda: stop_view(caller.user_id),
            interaction=interaction,
            token_deadline=deadline,
        )
        self._stream(reply, sink, interaction.channel_id)

    async def reset(self, interaction: discord.Interaction, user: discord.User | None) -> None:
        caller = _caller_of(interaction)
        if not await self._admit(interaction, caller):
            return
        target = caller.user_id if user is None else user.id
        if target != caller.user_id and not self._access.may_configure_chat(caller):
            await _tell(interaction, ADMINS_ONLY)
            return

        if target != caller.user_id:
            _audit(interaction, f"/reset {target}")

        async def work() -> str:
            await self._service.reset(_key(interaction.channel_id, target))
            if target == caller.user_id:
                return "Started a new dialogue for you in this channel."
            return f"Started a new dialogue for <@{target}> in this channel."

        await _answer_privately(interaction, work)

    async def system(self, interaction: discord.Interaction, text: str | None) -> None:
        caller = _caller_of(interaction)
        if not await self._admit(interaction, caller):
            return
        chat_id = str(interaction.channel_id)
        if text is None:

            async def show() -> str:
                current = await self._service.system_prompt(PLATFORM, chat_id)
                shown = _clip(current.text) if current.text else "(empty)"
                label = "custom" if current.is_custom else "default"
                return f"System prompt for this channel ({label}):\n{_quoted(shown)}"

            await _answer_privately(interaction, show)
            return
        if not self._access.may_configure_chat(caller):
            await _tell(interaction, ADMINS_ONLY)
            return
        is_clear = text.strip().lower() in CLEAR_WORDS
        _audit(interaction, "/system (clear)" if is_clear else "/system (set)")

        async def change() -> str:
            await self._service.set_system_prompt(PLATFORM, chat_id, None if is_clear else text)
            if is_clear:
                return "System prompt for this channel restored to the default."
            return "System prompt for this channel set."

        await _answer_privately(interaction, change)

    async def stop(self, interaction: discord.Interaction) -> None:
        caller = _caller_of(interaction)
        if not self._access.may_chat(caller):
            await _tell(interaction, NOT_ALLOWED)
            return
        if self._service.stop(_key(interaction.channel_id, caller.user_id)):
            await _tell(interaction, "Stopping your answer.")
        else:
            await _tell(interaction, "Nothing of yours is being written in this channel.")

    async def reload(self, interaction: discord.Interaction) -> None:
        """Configured admins re-read the config: allowlists, limits, ... apply at once."""
        caller = _caller_of(interaction)
        if caller.user_id not in self._access.configured_admins():
            # Manage Server makes an admin of one server, not of the bot's whole config.
            await _tell(interaction, RELOAD_ADMINS_ONLY)
            return
        reloader = self._reloader
        if reloader is None:
            await _tell(interaction, "This bot was not started from a config file.")
            return

        _audit(interaction, "/reload")

        async def work() -> str:
            return (await reloader.reload()).summary()

        await _answer_privately(interaction, work)

    async def on_stop_pressed(self, interaction: discord.Interaction, owner_id: int) -> None:
        """The Stop button: its owner (or an admin) stops that answer."""
        caller = _caller_of(interaction)
        if caller.user_id != owner_id and not self._access.is_admin(caller):
            await _tell(interaction, ONLY_OWNER_STOPS)
            return
        if self._service.stop(_key(interaction.channel_id, owner_id)):
            # Acknowledged without a change: the answer's own next edit shows that it stopped.
            await interaction.response.defer()
        else:
            await _tell(interaction, "This answer has already finished.")

    async def on_answer_button(
        self, interaction: discord.Interaction, owner_id: int, *, is_continue: bool
    ) -> None:
        """🔄 (answer the question again) or ➡ (go on) under its owner's latest answer."""
        verb = "continue" if is_continue else "regenerate"
        caller = _caller_of(interaction)
        if caller.user_id != owner_id or not self._access.may_chat(caller):
            await _tell(interaction, f"Only the person who asked can {verb} this answer.")
            return
        if not self._is_accepting:
            await _tell(interaction, RESTARTING)
            return
        key = _key(interaction.channel_id, owner_id)
        old = interaction.message
        if old is None or self._latest.get(key) != old.id:
            await _tell(interaction, f"Only the latest answer can be {verb}d.")
            return
        try:
            if is_continue:
                reply = await self._service.start_reply(key, CONTINUE_TEXT)
            else:
                reply = await self._service.regenerate(key)
        except ChatError as exc:
            await _tell(interaction, str(exc))
            return
        del self._latest[key]
        try:
            # Acknowledges the press; the old answer stays, without its buttons, and the new
            # one replies to it.
            await interaction.response.edit_message(view=None)
        except discord.HTTPException as exc:
            log.warning("discord: could not acknowledge a button press: %r", exc)
        sink = DiscordSink(
            _channel_of(interaction), make_view=lambda: stop_view(owner_id), reply_to=old
        )
        self._stream(reply, sink, interaction.channel_id)

    # Messages -----------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """Answer a direct message, or a guild message that @mentions the bot."""
        if message.author.bot or self._bot_user_id is None:
            return
        is_dm = message.guild is None
        if not is_dm and self._bot_user_id not in message.raw_mentions:
            return
        if not self._is_accepting:
            await _reply(message, RESTARTING)
            return
        caller = Caller(
            message.author.id,
            is_dm=is_dm,
            manages_server=_manages_server(message),
            guild_id=message.guild.id if message.guild is not None else None,
            channel_ids=_channel_ids(message.channel),
            role_ids=_role_ids(message.author),
        )
        if not self._access.may_chat(caller):
            if is_dm:  # in a guild channel a refusal would only add noise for everyone
                await _reply(message, NOT_ALLOWED)
            return
        text = re.sub(rf"<@!?{self._bot_user_id}>", " ", message.content)
        key = _key(message.channel.id, caller.user_id)
        try:
            turn = await self._turns.turn(message, self._bot_user_id, text)
            reply = await self._service.start_reply(key, turn)
        except ChatError as exc:
            await _reply(message, str(exc))
            return
        except Exception:
            log.exception("discord: could not start a reply for %s", key)
            await _reply(message, FAILED)
            return
        sink = DiscordSink(
            message.channel, make_view=lambda: stop_view(caller.user_id), reply_to=message
        )
        self._stream(reply, sink, message.channel.id)

    # Helpers ------------------------------------------------------------------------------------

    async def _admit(self, interaction: discord.Interaction, caller: Caller) -> bool:
        if not self._is_accepting:
            await _tell(interaction, RESTARTING)
            return False
        if not self._access.may_chat(caller):
            await _tell(interaction, NOT_ALLOWED)
            return False
        return True

    def _stream(self, reply: Reply, sink: DiscordSink, channel_id: int | None) -> None:
        assert channel_id is not None

        async def offer_regenerate() -> None:
            final = await reply.finished()
            if not self._is_accepting or final.status is ReplyStatus.INTERRUPTED:
                return
            view = answer_view(
                int(reply.key.user_id), can_continue=final.status is ReplyStatus.LENGTH
            )
            message_id = await sink.mark_last(view)
            if message_id is not None:
                self._latest.pop(reply.key, None)  # newest last: the oldest are forgotten first
                self._latest[reply.key] = message_id
                if len(self._latest) > MAX_REMEMBERED:
                    del self._latest[next(iter(self._latest))]

        after = offer_regenerate if self._regenerate_button else None
        self._replies.start(reply, sink, channel_id=channel_id, after=after)


def ids_text(interaction: discord.Interaction) -> str:
    """The ids an admin needs for allowed_users, admins and guild_ids (open to everyone)."""
    lines = [f"Your user id: {interaction.user.id}", f"This channel's id: {interaction.channel_id}"]
    if interaction.guild_id is not None:
        lines.append(f"This server's id: {interaction.guild_id}")
    return "\n".join(lines)


def _key(channel_id: int | None, user_id: int) -> ChatKey:
    return ChatKey(platform=PLATFORM, chat_id=str(channel_id), user_id=str(user_id))


def _caller_of(interaction: discord.Interaction) -> Caller:
    is_dm = interaction.guild_id is None
    return Caller(
        interaction.user.id,
        is_dm=is_dm,
        manages_server=not is_dm and interaction.permissions.manage_guild,
        guild_id=interaction.guild_id,
        channel_ids=_channel_ids(interaction.channel, interaction.channel_id),
        role_ids=_role_ids(interaction.user),
    )


def _channel_ids(channel: object, channel_id: int | None = None) -> frozenset[int]:
    """The channel's id and, for a thread, its parent's (allowed channels cover their threads)."""
    ids = {channel_id} if channel_id is not None else set()
    for attribute in ("id", "parent_id"):
        value = getattr(channel, attribute, None)
        if isinstance(value, int):
            ids.add(value)
    return frozenset(ids)


def _role_ids(user: object) -> frozenset[int]:
    if isinstance(user, discord.Member):
        return frozenset(role.id for role in user.roles)
    return frozenset()


def _manages_server(message: discord.Message) -> bool:
    author = message.author
    return isinstance(author, discord.Member) and author.guild_permissions.manage_guild


def _channel_of(interaction: discord.Interaction) -> discord.abc.Messageable:
    channel = interaction.channel
    if isinstance(channel, discord.abc.Messageable):
        return channel
    assert interaction.channel_id is not None
    return interaction.client.get_partial_messageable(interaction.channel_id)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_PROMPT else text[: MAX_SHOWN_PROMPT - 1] + "…"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


async def _tell(interaction: discord.Interaction, text: str) -> None:
    """Answer privately at once (refusals, errors, quick commands)."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def _answer_privately(
    interaction: discord.Interaction, work: Callable[[], Awaitable[str]]
) -> None:
    """Acknowledge at once (ephemeral), then show what `work` says (it may touch the store)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await work()
    except ChatError as exc:
        text = str(exc)
    except Exception:
        command = interaction.command.name if interaction.command else "?"
        log.exception("discord: /%s failed", command)
        text = FAILED
    await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)


async def _retract(interaction: discord.Interaction, text: str) -> None:
    """After a public defer: say `text` privately and remove the public placeholder."""
    try:
        # The first follow-up after a defer would replace the placeholder (public, whatever its
        # flags say), so resolve the placeholder first; then a follow-up can be ephemeral.
        await interaction.edit_original_response(content="…", allowed_mentions=NO_MENTIONS)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        await interaction.delete_original_response()
    except discord.HTTPException as exc:
        log.warning("discord: could not report an error to the user: %r", exc)


async def _reply(message: discord.Message, text: str) -> None:
    try:
        await message.channel.send(
            text,
            reference=message.to_reference(fail_if_not_exists=False),
            allowed_mentions=NO_MENTIONS,
        )
    except discord.HTTPException as exc:
        log.warning("discord: could not answer a message: %r", exc)


def _audit(interaction: discord.Interaction, command: str) -> None:
    """One line for every admin action (the admin check passed): who, what, where."""
    log.info(
        "audit: admin %d ran %s in channel %s (server %s)",
        interaction.user.id,
        command,
        interaction.channel_id,
        interaction.guild_id or "-",
    )
