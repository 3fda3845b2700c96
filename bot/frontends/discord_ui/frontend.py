"""Discord front-end: one discord.py client in the bot's process, sharing the one ChatService."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import discord
from discord import app_commands

from bot.chat.service import ChatService
from bot.chat.turn import TurnComposer
from bot.config import ChatSettings, DiscordSettings, Settings
from bot.frontends.discord_ui.access import AccessPolicy
from bot.frontends.discord_ui.answers import Answers
from bot.frontends.discord_ui.commands import SlashCommands
from bot.frontends.discord_ui.connect import connector_for, is_default_api_base
from bot.frontends.discord_ui.controls import AnswerButton, StopButton
from bot.frontends.discord_ui.replies import ReplyStreams
from bot.frontends.discord_ui.sink import NO_MENTIONS
from bot.frontends.discord_ui.turns import TurnReader
from bot.metrics import Metrics, PlatformErrorKind
from bot.reload import LiveSettings, Reloader
from bot.render.delivery import DeliveryOptions
from bot.render.pacing import Clock, SystemClock
from bot.store.records import InterruptedReply

log = logging.getLogger(__name__)

INTERACTION_TOKEN_TTL = 15 * 60.0  # Discord's; a test server may use less


class _Client(discord.Client):
    """discord.py client that hands events to the answers and syncs commands on login."""

    def __init__(
        self,
        answers: Answers,
        commands: SlashCommands,
        *,
        guild_ids: tuple[int, ...],
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.stop_handler = answers  # found by StopButton.callback via interaction.client
        self._answers = answers
        self._guild_ids = guild_ids
        self.tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(self)
        commands.add_to(self.tree)  # type: ignore[arg-type]

    async def setup_hook(self) -> None:
        self.add_dynamic_items(StopButton, AnswerButton)
        try:
            await self._sync_commands()
        except (discord.HTTPException, discord.RateLimited) as exc:
            # The commands of an earlier sync stay usable; DMs and mentions work regardless.
            log.error("discord: could not sync slash commands: %r", exc)

    async def _sync_commands(self) -> None:
        if not self._guild_ids:
            synced = await self.tree.sync()
            log.info("discord: synced %d slash commands globally", len(synced))
        for guild_id in self._guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("discord: synced %d slash commands to guild %d", len(synced), guild_id)

    async def on_ready(self) -> None:
        assert self.user is not None
        self._answers.set_bot_user(self.user.id)
        log.info(
            "discord: connected as %s (id %d) in %d guilds",
            self.user.name,
            self.user.id,
            len(self.guilds),
        )

    async def on_message(self, message: discord.Message) -> None:
        await self._answers.on_message(message)


class DiscordFrontend:
    """Slash commands, DMs and @mentions, answered by streaming into Discord messages.

    Only unprivileged intents are asked for: Discord delivers the text of direct messages and
    of messages that mention the bot without the message-content intent, and those are the
    only messages it answers; everything else goes through slash commands.
    """

    name = "discord"

    def __init__(
        self,
        settings: DiscordSettings,
        service: ChatService,
        *,
        chat: ChatSettings,
        clock: Clock | None = None,
        token_ttl: float = INTERACTION_TOKEN_TTL,
        token_margin: float = 60.0,
        channel_calls: int | None = None,
        channel_period: float = 5.0,
        final_timeout: float = DeliveryOptions.final_timeout,
        ready_timeout: float = 60.0,
        guild_ready_timeout: float = 2.0,
        metrics: Metrics | None = None,
        live: LiveSettings | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._ready_timeout = ready_timeout
        self._guild_ready_timeout = guild_ready_timeout
        self.replies = ReplyStreams(
            clock=clock or SystemClock(),
            reasoning=chat.reasoning,
            options=DeliveryOptions(settings.edit_interval, final_timeout=final_timeout),
            channel_gap=min(0.25, settings.edit_interval / 4),
            channel_calls=channel_calls,
            channel_period=channel_period,
            on_error=self._count_error,
        )
        # Allowlists and admins are read from `live` on every call: a reload applies at once.
        live = live or LiveSettings(Settings(discord=settings, chat=chat))
        access = AccessPolicy(lambda: live.settings.discord)
        self._answers = Answers(
            service,
            self.replies,
            access,
            TurnReader(TurnComposer(chat)),
            token_ttl=token_ttl,
            token_margin=token_margin,
            regenerate_button=chat.regenerate_button,
        )
        self._commands = SlashCommands(
            service, self._answers, access, metrics=metrics, reloader=reloader
        )
        live.subscribe(lambda s: self.replies.set_edit_interval(s.discord.edit_interval))
        self._client: _Client | None = None
        self._task: asyncio.Task[None] | None = None

    def _count_error(self, kind: PlatformErrorKind) -> None:
        if self._metrics is not None:
            self._metrics.count_platform_error(self.name, kind)

    @property
    def is_up(self) -> bool:
        """Connected to the gateway and ready (for /healthz); false while it reconnects."""
        client = self._client
        return client is not None and client.is_ready() and not client.is_closed()

    async def start(self) -> None:
        """Log in, sync the slash commands, connect to the gateway; returns once ready."""
        settings = self._settings
        proxy = settings.proxy or None  # validated by the config loader
        connector = None
        if not is_default_api_base(settings.api_base):
            # A plain Client would connect to Discord's own gateway: ask api_base for its own.
            connector = await connector_for(settings.api_base, settings.token, proxy=proxy)
        client = _Client(
            self._answers,
            self._commands,
            guild_ids=settings.guild_ids,
            intents=discord.Intents.default(),  # guilds, guild and DM messages: none privileged
            connector=connector,
            proxy=proxy,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=self._guild_ready_timeout,
            max_ratelimit_timeout=30.0,
        )
        self._client = client
        self._task = asyncio.create_task(client.start(settings.token), name="discord client")
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {self._task, ready},
                timeout=self._ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if self._task in done:
            error = await self._shut_client()
            # What stopped it: a bad token, refused intents, no connection, ...
            raise error or RuntimeError("the Discord client stopped during start-up")
        if ready not in done:
            await self._shut_client()
            raise TimeoutError(f"Discord did not become ready within {self._ready_timeout:g} s")
        self._task.add_done_callback(_log_client_end)

    async def announce_interrupted(self, interrupted: Sequence[InterruptedReply]) -> None:
        """Not on Discord yet: the cut answer keeps its last text (and is interrupted in the
        dialogue); its Stop button then answers that the answer is already finished."""
        del interrupted

    async def stop_receiving(self) -> None:
        """Refuse new commands and messages; answers being written go on."""
        self._answers.stop_accepting()

    async def close(self) -> None:
        """Land the final text of every answer still being written, then disconnect."""
        self._answers.stop_accepting()
        await self.replies.close()
        await self._shut_client()

    async def _shut_client(self) -> BaseException | None:
        """Close the client and wait for its task; returns the error it ended with, if any."""
        client, task = self._client, self._task
        self._client = self._task = None
        if client is not None:
            await client.close()
        if task is None:
            return None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
            return task.exception()
        return None


def _log_client_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discord: the client stopped: %r", task.exception())
