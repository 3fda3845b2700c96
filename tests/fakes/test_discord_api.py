"""The real discord.py 2.7 client against the loopback fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator

import discord
import pytest
import yarl
from discord import app_commands

from bot.frontends.discord_ui.connect import RedirectConnector, connector_for

from .discord_api import FakeDiscord
from .discord_state import (
    DID_NOT_RESPOND,
    FLAG_LOADING,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    FakeGuild,
    FakeUser,
)

EDIT_ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/@original"
SEND_MESSAGE = "POST /channels/{channel_id}/messages"


class Bot(discord.Client):
    """A small bot with the shapes the real front-end uses: defer+edit, views, groups."""

    def __init__(
        self,
        connector: RedirectConnector,
        *,
        message_content: bool = False,
        sync_guild: int | None = None,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        # The fake sends every GUILD_CREATE right after READY, so a short quiet period suffices.
        super().__init__(intents=intents, connector=connector, guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.sync_guild = sync_guild
        self.ready = asyncio.Event()
        self.seen: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.held: asyncio.Queue[discord.Interaction] = asyncio.Queue()
        self.can_manage: dict[int, bool] = {}
        self._add_commands()

    def _add_commands(self) -> None:
        @self.tree.command(description="Talk to the model")
        async def chat(interaction: discord.Interaction, prompt: str) -> None:
            self.can_manage[interaction.user.id] = interaction.permissions.manage_guild
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"echo: {prompt}")

        @self.tree.command(description="Defers, then leaves the interaction to the test")
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.held.put(interaction)

        @self.tree.command(description="Never answers")
        async def hang(interaction: discord.Interaction) -> None:
            await self.held.put(interaction)

        @self.tree.command(description="Shows a button")
        async def button(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pick", view=ClickView())

        @self.tree.command(description="Asks for text in a modal")
        async def ask(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(AskModal())

        admin = app_commands.Group(name="admin", description="Admin commands")

        @admin.command(description="Statistics")
        async def stats(interaction: discord.Interaction, days: int = 1) -> None:
            await interaction.response.send_message(f"stats for {days}d", ephemeral=True)

        self.tree.add_command(admin)

    async def setup_hook(self) -> None:
        await self.tree.sync()
        if self.sync_guild is not None:
            self.tree.copy_global_to(guild=discord.Object(self.sync_guild))
            await self.tree.sync(guild=discord.Object(self.sync_guild))

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            await self.seen.put(message)


class ClickView(discord.ui.View):
    @discord.ui.button(label="Go", custom_id="go")
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.edit_message(
            content=f"clicked by {interaction.user.name}", view=None
        )


class AskModal(discord.ui.Modal, title="Ask"):
    question = discord.ui.TextInput(label="Question", custom_id="question")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"asked: {self.question.value}")


@contextlib.asynccontextmanager
async def running(dc: FakeDiscord, **options: object) -> AsyncIterator[Bot]:
    """Starts a Bot against the fake and waits for on_ready; closes it afterwards."""
    bot = Bot(await connector_for(dc.api_base, dc.token), **options)  # type: ignore[arg-type]
    start = asyncio.create_task(bot.start(dc.token))
    ready = asyncio.create_task(bot.ready.wait())
    try:
        done, _ = await asyncio.wait(
            {start, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if start in done:
            start.result()  # raises what stopped the client
        assert ready in done, "client did not become ready"
        yield bot
    finally:
        ready.cancel()
        await bot.close()
        await start


@pytest.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def people(dc: FakeDiscord) -> tuple[FakeUser, FakeUser, FakeGuild]:
    alice, mona = dc.add_user("alice"), dc.add_user("mona")
    return alice, mona, dc.add_guild("Lab", members=[alice], managers=[mona])


async def test_ready_syncs_commands_and_loads_guilds(dc, people) -> None:
    alice, mona, guild = people
    async with running(dc, sync_guild=guild.id) as bot:
        assert bot.user is not None and bot.user.id == dc.bot.id
        session = dc.sessions[0]
        assert session.compress == "zlib-stream"  # discord.py's default transport compression
        assert session.intents & INTENT_GUILDS and not session.intents & INTENT_MESSAGE_CONTENT
        synced = dc.calls_to("PUT /applications/{application_id}/commands")
        assert [sorted(c["name"] for c in call.json) for call in synced] == [
            ["admin", "ask", "button", "chat", "hang", "later"]
        ]
        assert sorted(c["name"] for c in dc.guild_commands[guild.id]) == [
            "admin",
            "ask",
            "button",
            "chat",
            "hang",
            "later",
        ]
        loaded = bot.get_guild(guild.id)
        assert loaded is not None and loaded.get_channel(guild.default_channel.id) is not None
        # Without the members intent only the bot's own member arrives, as on Discord.
        assert loaded.get_member(mona.id) is None and loaded.me.id == dc.bot.id
        manager = discord.utils.get(loaded.roles, name="Manager")
        assert manager.permissions.manage_guild and not loaded.default_role.permissions.manage_guild
        rec = await dc.slash(alice, "chat", prompt="guild copy", guild=guild)
        assert rec.payload["data"]["guild_id"] == str(guild.id)  # the guild command was used
        await dc.wait_for(lambda: rec.original and rec.original.content == "echo: guild copy")


async def test_slash_command_defers_then_edits_original(dc, people) -> None:
    alice, mona, guild = people
    async with running(dc) as bot:
        rec = await dc.slash(alice, "chat", prompt="hello", guild=guild)
        await dc.wait_for(lambda: rec.original and rec.original.content == "echo: hello")
        assert rec.status == "answered" and rec.callback_type == 5
        assert [bool(s.flags & FLAG_LOADING) for s in rec.original.history] == [True, False]
        other = await dc.slash(mona, "chat", prompt="hi", guild=guild)
        await dc.wait_for(lambda: other.original and other.original.content == "echo: hi")
        assert bot.can_manage == {alice.id: False, mona.id: True}


async def test_subcommand_in_dm_answers_ephemeral(dc, people) -> None:
    alice, _, _ = people
    async with running(dc):
        rec = await dc.slash(alice, "admin stats", days=7)
        await dc.wait_for(lambda: rec.original)
        assert rec.original.content == "stats for 7d" and rec.original.is_ephemeral
        assert rec.channel.is_dm and rec.callback_type == 4


async def test_button_click_updates_the_message(dc, people) -> None:
    alice, _, guild = people
    async with running(dc):
        rec = await dc.slash(alice, "button", guild=guild)
        shown = await dc.wait_for(lambda: rec.original)
        assert "go" in shown.custom_ids()
        click = await dc.click(alice, shown, "go")
        await dc.wait_for(lambda: click.is_answered)
        assert click.callback_type == 7
        assert shown.content == "clicked by alice" and shown.components == []


async def test_modal_is_shown_and_submitted(dc, people) -> None:
    alice, _, guild = people
    async with running(dc):
        rec = await dc.slash(alice, "ask", guild=guild)
        await dc.wait_for(lambda: rec.modal)
        assert rec.callback_type == 9 and rec.modal["title"] == "Ask"
        submit = await dc.submit_modal(alice, rec, {"question": "why?"})
        await dc.wait_for(lambda: submit.original)
        assert submit.original.content == "asked: why?"


async def test_followups_and_webhook_edits(dc, people) -> None:
    alice, _, guild = people
    async with running(dc) as bot:
        rec = await dc.slash(alice, "later", guild=guild)
        interaction = await asyncio.wait_for(bot.held.get(), 5)
        followup = await interaction.followup.send("part 2", ephemeral=True, wait=True)
        await followup.edit(content="part 2, edited")
        await interaction.edit_original_response(content="part 1")
        assert (await interaction.original_response()).content == "part 1"
        await interaction.delete_original_response()
        [shown] = rec.followups
        assert shown.is_ephemeral and [h.content for h in shown.history] == [
            "part 2",
            "part 2, edited",
        ]
        assert rec.original.is_deleted and rec.original.history[-2].content == "part 1"


async def test_dm_typing_and_upload_through_channel_routes(dc, people) -> None:
    alice, _, _ = people
    async with running(dc) as bot:
        user = await bot.fetch_user(alice.id)
        async with user.typing():
            await user.send("hello", file=discord.File(io.BytesIO(b"abc"), "notes.txt"))
        [message] = dc.messages_in(dc.dm_channel(alice))
        assert message.content == "hello" and message.attachments[0]["filename"] == "notes.txt"
        assert message.attachments[0]["size"] == 3
        assert [channel_id for _, channel_id in dc.typing][:1] == [dc.dm_channel(alice).id]


async def test_message_content_depends_on_intent_and_mention(dc, people) -> None:
    alice, _, guild = people
    async with running(dc) as bot:
        await dc.inject_message(alice, "plain", guild=guild)
        await dc.inject_message(alice, "hi there", guild=guild, mention_bot=True)
        await dc.inject_message(alice, "in a dm")
        got = [await asyncio.wait_for(bot.seen.get(), 5) for _ in range(3)]
        assert [m.content for m in got] == ["", f"<@{dc.bot.id}> hi there", "in a dm"]
        assert bot.user in got[1].mentions and got[2].guild is None
    async with running(dc, message_content=True) as bot:
        await dc.inject_message(alice, "plain", guild=guild)
        assert (await asyncio.wait_for(bot.seen.get(), 5)).content == "plain"


async def test_rate_limited_edit_is_retried_after_retry_after(dc, people) -> None:
    alice, _, guild = people
    dc.rate_limit(EDIT_ORIGINAL, retry_after=0.2)
    async with running(dc):
        rec = await dc.slash(alice, "chat", prompt="slow", guild=guild)
        await dc.wait_for(lambda: rec.original and rec.original.content == "echo: slow")
        first, retry = dc.calls_to(EDIT_ORIGINAL)
        assert (first.status, retry.status) == (429, 200)
        assert retry.at - first.at >= 0.2 * 0.9  # it waited retry_after (loop clock slack)


async def test_rate_limited_channel_send_is_retried(dc, people) -> None:
    _, _, guild = people
    dc.rate_limit(SEND_MESSAGE, retry_after=0.1)
    async with running(dc) as bot:
        channel = bot.get_channel(guild.default_channel.id)
        sent = await channel.send("hi")
        assert [c.status for c in dc.calls_to(SEND_MESSAGE)] == [429, 200]
        assert [m.content for m in dc.messages_in(guild.default_channel)] == ["hi"]
        assert dc.message(sent.id).author is dc.bot


async def test_content_limits_are_enforced(dc, people) -> None:
    _, _, guild = people
    async with running(dc) as bot:
        channel = bot.get_channel(guild.default_channel.id)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        with pytest.raises(discord.HTTPException) as empty:
            await channel.send("")
        assert (too_long.value.status, too_long.value.code) == (400, 50035)
        assert (empty.value.status, empty.value.code) == (400, 50006)
        await channel.send("x" * 2000)


async def test_expired_token_surfaces_as_http_exception(people) -> None:
    alice, _, _ = people
    async with FakeDiscord(token_ttl=0.3) as dc:
        guild = dc.add_guild(members=[alice])
        async with running(dc) as bot:
            rec = await dc.slash(alice, "later", guild=guild)
            interaction = await asyncio.wait_for(bot.held.get(), 5)
            await dc.wait_for(lambda: rec.is_answered)
            await asyncio.sleep(max(0.0, rec.expires_at - time.monotonic()))
            with pytest.raises(discord.HTTPException) as expired:
                await interaction.edit_original_response(content="too late")
            assert (expired.value.status, expired.value.code) == (401, 50027)


async def test_unanswered_interaction_fails_after_deadline(people) -> None:
    alice, _, _ = people
    async with FakeDiscord(response_deadline=0.2) as dc:
        guild = dc.add_guild(members=[alice])
        async with running(dc) as bot:
            rec = await dc.slash(alice, "hang", guild=guild)
            interaction = await asyncio.wait_for(bot.held.get(), 5)
            await dc.wait_for(lambda: rec.status == "failed")
            assert rec.failure == DID_NOT_RESPOND and rec.original is None
            with pytest.raises(discord.NotFound) as late:
                await interaction.response.defer()
            assert late.value.code == 10062


async def test_reconnect_resumes_the_session(dc, people) -> None:
    alice, _, guild = people
    async with running(dc):
        await dc.reconnect_gateway()
        await dc.wait_for(lambda: dc.sessions[0].num_resumes == 1)
        rec = await dc.slash(alice, "chat", prompt="again", guild=guild)
        await dc.wait_for(lambda: rec.original and rec.original.content == "echo: again")
        assert len(dc.sessions) == 1


async def test_disallowed_privileged_intent_is_refused(people) -> None:
    async with FakeDiscord(privileged_intents=0) as dc:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running(dc, message_content=True):
                pass


async def test_unsynced_command_cannot_be_invoked(dc, people) -> None:
    alice, _, guild = people
    with pytest.raises(LookupError):
        await dc.slash(alice, "chat", prompt="x", guild=guild)


async def test_redirect_connector_rewrites_discord_urls() -> None:
    connector = RedirectConnector("http://127.0.0.1:9/api/v10", "ws://127.0.0.1:9/gateway")
    try:
        rest = connector.rewrite(yarl.URL("https://discord.com/api/v10/users/@me?x=1"))
        gateway = connector.rewrite(yarl.URL("wss://gateway.discord.gg/?v=10&encoding=json"))
        other = yarl.URL("https://cdn.discordapp.com/a.png")
        assert str(rest) == "http://127.0.0.1:9/api/v10/users/@me?x=1"
        assert str(gateway) == "ws://127.0.0.1:9/gateway?v=10&encoding=json"
        assert connector.rewrite(other) is other
    finally:
        await connector.close()
