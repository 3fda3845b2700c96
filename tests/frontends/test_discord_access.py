"""Discord end to end: who may do what, and refusals that only the refused person sees."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from bot.chat.commands import ADMINS_ONLY_RELOAD, DISCORD, NOT_ALLOWED, SYSTEM_CLEARED
from tests.fakes.discord_state import CALLBACK_MESSAGE, InteractionRecord
from tests.frontends.discord_harness import CALLBACK, is_done, running_bot, throttled
from tests.support.models import build_scripted_model

ANSWER = "Hello there! This is **the answer**"
SCRIPT = f"Let me think about it. </think>\n\n{ANSWER}"


@pytest.fixture
def model(tokenizer: Any) -> Any:
    return build_scripted_model(tokenizer, SCRIPT)


async def refusal(dc: Any, rec: InteractionRecord) -> str:
    """The ephemeral text the interaction was answered with at once (no public deferral)."""
    await dc.wait_for(lambda: rec.original)
    assert rec.callback_type == CALLBACK_MESSAGE and rec.original.is_ephemeral
    return rec.original.content


async def test_admin_commands_are_refused_privately_to_members(
    model, tokenizer, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bot.frontends.discord_ui.commands")
    async with running_bot(model, tokenizer, tmp_path, chat={"system_prompt": "Default."}) as bot:
        dc, guild = bot.dc, bot.guild
        channel_id = str(guild.default_channel.id)

        denied = await dc.slash(bot.alice, "system", text="Be terse.", guild=guild)
        assert await refusal(dc, denied) == DISCORD.admins_only("system")
        denied = await dc.slash(bot.alice, "reset", option_values={"user": bot.bob}, guild=guild)
        assert await refusal(dc, denied) == DISCORD.admins_only("reset")
        assert (await bot.app.service.system_prompt("discord", channel_id)).text == "Default."

        # Manage Server makes mona an admin in her server.
        done = await dc.slash(bot.mona, "system", text="Be terse.", guild=guild)
        await dc.wait_for(lambda: done.original and done.original.content)
        assert done.original.is_ephemeral
        assert done.original.content == DISCORD.system_set()
        assert (await bot.app.service.system_prompt("discord", channel_id)).text == "Be terse."
        # ... but not of the bot's config, which may cover other servers.
        denied = await dc.slash(bot.mona, "reload", guild=guild)
        assert await refusal(dc, denied) == ADMINS_ONLY_RELOAD

        # A configured admin: may reset someone else's dialogue; mentions never ping.
        done = await dc.slash(bot.root, "reset", option_values={"user": bot.alice}, guild=guild)
        await dc.wait_for(lambda: done.original and done.original.content)
        assert done.original.content == f"🧹 Reset the conversation of <@{bot.alice.id}>."
        cleared = await dc.slash(bot.root, "system", text="clear", guild=guild)
        await dc.wait_for(lambda: cleared.original and cleared.original.content)
        assert cleared.original.content == SYSTEM_CLEARED
        assert (await bot.app.service.system_prompt("discord", channel_id)).text == "Default."
        sent = [c for c in dc.calls if c.json and "content" in c.json]
        assert all(c.json["allowed_mentions"] == {"parse": []} for c in sent)
        # Every admin action that was let through has its audit line, and only those.
        audit = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit:")]
        where = f"in channel {channel_id} (server {guild.id})"
        assert audit == [
            f"audit: admin {bot.mona.id} ran /system (set) {where}",
            f"audit: admin {bot.root.id} ran /reset {bot.alice.id} {where}",
            f"audit: admin {bot.root.id} ran /system (clear) {where}",
        ]
        # Nobody was ever refused publicly: refusals are answered at once, never deferred.
        deferred = [c for c in dc.calls_to(CALLBACK) if c.json["type"] == 5]
        assert all(c.json["data"]["flags"] & 64 for c in deferred)


async def test_allowed_users_limit_who_may_chat(model, tokenizer, tmp_path) -> None:
    # (An empty list lets everyone in: every other test runs that way.)
    async with running_bot(model, tokenizer, tmp_path, allowed_users=["alice"]) as bot:
        dc, guild = bot.dc, bot.guild
        assert bot.settings.discord.allowed_users == (bot.alice.id,)
        denied = await dc.slash(bot.bob, "chat", prompt="hi", guild=guild)
        assert await refusal(dc, denied) == NOT_ALLOWED
        dm = await dc.inject_message(bot.bob, "hi")
        [told] = await dc.wait_for(lambda: bot.bot_messages(dm.channel))
        assert told.content == NOT_ALLOWED and told.referenced is dm
        assert await bot.stored(guild.default_channel.id, bot.bob) == []
        assert await bot.stored(dm.channel.id, bot.bob) == []

        for user in (bot.alice, bot.mona, bot.root):  # listed, Manage Server, admin
            rec = await dc.slash(user, "chat", prompt="hi", guild=guild)
            await dc.wait_for(lambda rec=rec: is_done(rec.original))
            assert rec.original.content.endswith(ANSWER)


async def test_bad_input_gets_the_reason_privately_and_nothing_is_stored(
    model, tokenizer, tmp_path
) -> None:
    async with running_bot(model, tokenizer, tmp_path, chat={"max_message_chars": 20}) as bot:
        dc, guild = bot.dc, bot.guild
        empty = await dc.slash(bot.alice, "chat", prompt="   ", guild=guild)
        assert await refusal(dc, empty) == "Your message is empty: send me some text."
        long = await dc.slash(bot.alice, "chat", prompt="x" * 21, guild=guild)
        assert await refusal(dc, long) == (
            "Your message is too long (21 characters; the limit is 20). Please shorten it."
        )
        mention_only = await dc.inject_message(bot.alice, "", guild=guild, mention_bot=True)
        [told] = await dc.wait_for(lambda: bot.bot_messages(guild.default_channel))
        assert told.content == "Your message is empty: send me some text."
        assert told.referenced is mention_only
        assert await bot.stored(guild.default_channel.id, bot.alice) == []


async def test_a_second_message_while_answering_is_refused_privately(
    model, tokenizer, tmp_path
) -> None:
    with throttled(model, 0.03):
        async with running_bot(model, tokenizer, tmp_path) as bot:
            dc, guild = bot.dc, bot.guild
            first = await dc.slash(bot.alice, "chat", prompt="one", guild=guild)
            await dc.wait_for(lambda: first.original and first.original.num_edits >= 1)
            second = await dc.slash(bot.alice, "chat", prompt="two", guild=guild)
            assert (await refusal(dc, second)).startswith("I'm still answering")
            await dc.wait_for(lambda: is_done(first.original))
            stored = await bot.stored(guild.default_channel.id, bot.alice)
            assert [m.content for m in stored] == ["one", ANSWER]


async def test_a_refusal_after_deferring_ends_up_private(model, tokenizer, tmp_path) -> None:
    # An engine that takes nothing: the refusal comes only after the public "thinking…".
    async with running_bot(model, tokenizer, tmp_path, max_queue=0) as bot:
        dc, guild = bot.dc, bot.guild
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=guild)
        await dc.wait_for(lambda: rec.original and rec.original.is_deleted and rec.followups)
        [told] = rec.followups
        assert told.is_ephemeral
        assert told.content == "I'm very busy right now; please try again in a minute."
        # The placeholder was resolved before the follow-up (else Discord would have put the
        # follow-up in its place, publicly), then removed.
        assert [s.content for s in rec.original.history] == ["", "…", "…"]
        assert await bot.stored(guild.default_channel.id, bot.alice) == []


def _lab_only(bot: Any) -> dict[str, Any]:
    return {"allowed_guilds": (bot.guild.id,)}


def _bots_channel_only(bot: Any) -> dict[str, Any]:
    return {"allowed_channels": (bot.guild.channels[1].id,)}


def _friends_only(bot: Any) -> dict[str, Any]:
    return {"allowed_roles": (bot.friends.id,)}


@pytest.mark.parametrize(
    ("allow", "allowed", "refused"),
    [
        # allowlist, then (user, guild, channel) answered and refused, as attribute names
        (_lab_only, ("alice", "guild", None), ("alice", "elsewhere", None)),
        (_bots_channel_only, ("alice", "guild", 1), ("alice", "guild", 0)),
        (_friends_only, ("bob", "guild", None), ("alice", "guild", None)),
    ],
    ids=["guilds", "channels", "roles"],
)
async def test_guild_channel_and_role_allowlists(
    model, tokenizer, tmp_path, allow, allowed, refused
) -> None:
    async with running_bot(model, tokenizer, tmp_path, extra_places=True) as bot:
        dc = bot.dc
        # As a config reload applies it: read on the next message, no restart.
        discord = dataclasses.replace(bot.settings.discord, **allow(bot))
        bot.live.replace(dataclasses.replace(bot.settings, discord=discord))

        def place(who: str, where: str, channel: int | None) -> tuple[Any, Any, Any]:
            guild = getattr(bot, where)
            return getattr(bot, who), guild, guild.channels[channel or 0]

        user, _, channel = place(*refused)
        # In a guild channel a refused mention gets nothing; a slash command a private line.
        dc_mention = await dc.inject_message(user, "hi", channel=channel, mention_bot=True)
        denied = await dc.slash(user, "chat", prompt="hi", channel=channel)
        assert await refusal(dc, denied) == NOT_ALLOWED
        dm = await dc.inject_message(user, "hi")  # in no listed guild, channel or role
        [told] = await dc.wait_for(lambda: bot.bot_messages(dm.channel))
        assert told.content == NOT_ALLOWED

        answered = []
        for who, where, channel_index in (allowed, ("root", *refused[1:])):  # root: an admin
            _, _, there = place(who, where, channel_index)
            rec = await dc.slash(getattr(bot, who), "chat", prompt="hi", channel=there)
            await dc.wait_for(lambda rec=rec: is_done(rec.original))
            answered.append(rec.original.content)
        assert all(text.endswith(ANSWER) for text in answered)
        # By now the refused mention would have been answered (or refused in public).
        in_channel = bot.bot_messages(channel)
        assert all(m.referenced is not dc_mention and m.content != NOT_ALLOWED for m in in_channel)
        assert await bot.stored(channel.id, user) == []
        assert await bot.stored(dm.channel.id, user) == []
