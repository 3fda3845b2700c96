"""Discord's slash commands: /chat /reset /system /stop /id /reload /stats /help.

Who may run each one and what it answers come from bot.chat.commands; this module only turns
interactions into those calls. Every answer is private (ephemeral) except /chat's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.chat.commands import (
    BY_NAME,
    DISCORD,
    NO_STATS,
    NOT_ALLOWED,
    NOT_RELOADABLE,
    NOTHING_TO_STOP,
    RESET_DONE,
    RESET_OTHERS,
    STOPPING,
    SYSTEM_CLEARED,
    Role,
    Rule,
    clipped,
    commands_for,
    is_clear,
)
from bot.chat.service import ChatService
from bot.frontends.discord_ui.access import AccessPolicy, Caller
from bot.frontends.discord_ui.answers import Answers
from bot.frontends.discord_ui.interactions import (
    PLATFORM,
    answer_privately,
    caller_of,
    key_of,
    tell,
)
from bot.metrics import Metrics, format_stats

if TYPE_CHECKING:
    from bot.reload import Reloader

log = logging.getLogger(__name__)

MAX_SHOWN_PROMPT = 1800  # a shown system prompt must leave room in Discord's 2000 characters


def _describe(name: str) -> str:
    return BY_NAME[name].describe("discord")


class SlashCommands:
    """Registers the slash commands and answers them; /chat is answered by `answers`."""

    def __init__(
        self,
        service: ChatService,
        answers: Answers,
        access: AccessPolicy,
        *,
        metrics: Metrics | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._service = service
        self._answers = answers
        self._access = access
        self._metrics = metrics
        self._reloader = reloader

    def add_to(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """Register every Discord command of bot.chat.commands on `tree`."""

        @tree.command(name="chat", description=_describe("chat"))
        @app_commands.describe(prompt="Your message", file="A text file to read with it")
        async def chat(
            interaction: discord.Interaction, prompt: str, file: discord.Attachment | None = None
        ) -> None:
            await self._answers.chat(interaction, prompt, file)

        @tree.command(name="reset", description=_describe("reset"))
        @app_commands.describe(user="Someone else whose conversation to reset (admins only)")
        async def reset(interaction: discord.Interaction, user: discord.User | None = None) -> None:
            await self.reset(interaction, user)

        @tree.command(name="system", description=_describe("system"))
        @app_commands.describe(text="The new system prompt; 'clear' restores the default")
        async def system(interaction: discord.Interaction, text: str | None = None) -> None:
            await self.system(interaction, text)

        @tree.command(name="stop", description=_describe("stop"))
        async def stop(interaction: discord.Interaction) -> None:
            await self.stop(interaction)

        @tree.command(name="id", description=_describe("id"))
        async def id_(interaction: discord.Interaction) -> None:
            text = DISCORD.ids_text(
                interaction.user.id, interaction.channel_id, interaction.guild_id
            )
            await tell(interaction, text)

        @tree.command(name="reload", description=_describe("reload"))
        async def reload(interaction: discord.Interaction) -> None:
            await self.reload(interaction)

        @tree.command(name="stats", description=_describe("stats"))
        async def stats(interaction: discord.Interaction) -> None:
            await self.stats(interaction)

        @tree.command(name="help", description=_describe("help"))
        async def help_(interaction: discord.Interaction) -> None:
            if await self._may(interaction, "help"):
                await tell(interaction, DISCORD.help_text())

        registered = {command.name for command in tree.get_commands()}
        assert registered >= {command.name for command in commands_for("discord")}

    async def _may(self, interaction: discord.Interaction, name: str) -> Caller | None:
        """The caller, if the command's rule lets them run it; else refused privately."""
        caller = caller_of(interaction)
        if not await self._passes(interaction, caller, BY_NAME[name].rule, name):
            return None
        return caller

    async def _passes(
        self, interaction: discord.Interaction, caller: Caller, rule: Rule, name: str
    ) -> bool:
        """Allowed here, then the rule: a refusal names what the caller lacks."""
        standing = self._access.standing(caller)
        if rule.role is not Role.ANYONE and not standing.is_allowed:
            await tell(interaction, NOT_ALLOWED)
            return False
        if not rule.allows(standing):
            await tell(interaction, DISCORD.admins_only(name))
            return False
        return True

    async def reset(self, interaction: discord.Interaction, user: discord.User | None) -> None:
        caller = caller_of(interaction)
        if not await self._answers.admit(interaction, caller):
            return
        target = caller.user_id if user is None else user.id
        if target != caller.user_id:
            if not await self._passes(interaction, caller, RESET_OTHERS, "reset"):
                return
            _audit(interaction, f"/reset {target}")

        async def work() -> str:
            await self._service.reset(key_of(interaction.channel_id, target))
            return (
                RESET_DONE if target == caller.user_id else DISCORD.reset_other_done(f"<@{target}>")
            )

        await answer_privately(interaction, work)

    async def system(self, interaction: discord.Interaction, text: str | None) -> None:
        caller = caller_of(interaction)
        if not await self._answers.admit(interaction, caller):
            return
        if not await self._passes(interaction, caller, BY_NAME["system"].rule, "system"):
            return
        chat_id = str(interaction.channel_id)
        if text is None:

            async def show() -> str:
                current = await self._service.system_prompt(PLATFORM, chat_id)
                shown = _quoted(clipped(current.text, MAX_SHOWN_PROMPT)) if current.text else ""
                return DISCORD.system_shown(shown, is_custom=current.is_custom)

            await answer_privately(interaction, show)
            return
        clear = is_clear(text)
        _audit(interaction, "/system (clear)" if clear else "/system (set)")

        async def change() -> str:
            await self._service.set_system_prompt(PLATFORM, chat_id, None if clear else text)
            return SYSTEM_CLEARED if clear else DISCORD.system_set()

        await answer_privately(interaction, change)

    async def stop(self, interaction: discord.Interaction) -> None:
        caller = await self._may(interaction, "stop")
        if caller is None:
            return
        if self._service.stop(key_of(interaction.channel_id, caller.user_id)):
            await tell(interaction, STOPPING)
        else:
            await tell(interaction, NOTHING_TO_STOP)

    async def reload(self, interaction: discord.Interaction) -> None:
        """Re-read the config: allowlists, limits, ... apply at once."""
        if await self._may(interaction, "reload") is None:
            return
        reloader = self._reloader
        if reloader is None:
            await tell(interaction, NOT_RELOADABLE)
            return
        _audit(interaction, "/reload")

        async def work() -> str:
            return (await reloader.reload()).summary()

        await answer_privately(interaction, work)

    async def stats(self, interaction: discord.Interaction) -> None:
        """The figures /metrics serves: the whole bot's, every server's and platform's."""
        if await self._may(interaction, "stats") is None:
            return
        metrics = self._metrics
        await tell(interaction, NO_STATS if metrics is None else format_stats(metrics.snapshot()))


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


def _audit(interaction: discord.Interaction, command: str) -> None:
    """One line for every admin action (the admin check passed): who, what, where."""
    log.info(
        "audit: admin %d ran %s in channel %s (server %s)",
        interaction.user.id,
        command,
        interaction.channel_id,
        interaction.guild_id or "-",
    )
