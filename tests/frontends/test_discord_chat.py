"""Discord end to end: slash commands, DMs and mentions answered by the scripted model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.chat.commands import ADMINS_ONLY_STATS, DISCORD, RESET_DONE
from bot.types import ChatKey
from tests.fakes.discord_state import (
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_MESSAGE,
    INTENT_MESSAGE_CONTENT,
    MAX_CONTENT,
)
from tests.frontends.backends import BACKENDS, on_backend
from tests.frontends.discord_harness import (
    assert_paced,
    is_done,
    longest_words,
    running_bot,
    throttled,
)
from tests.support.models import build_scripted_model

REASONING = "Let me think about it."
ANSWER = "Hello there! This is **the answer**"
SCRIPT = f"{REASONING} </think>\n\n{ANSWER}"
FINAL_QUOTED = f"> {REASONING}\n{ANSWER}"


@pytest.fixture(params=BACKENDS)
def model(request: pytest.FixtureRequest, tokenizer: Any) -> Any:
    """The scripted model, or the fake OpenAI server saying the same (backend = "openai")."""
    if request.param == "openai":
        return on_backend("openai", None, SCRIPT)
    return build_scripted_model(tokenizer, SCRIPT)


@pytest.mark.parametrize(
    ("mode", "final"),
    [("hidden", ANSWER), ("collapsed", FINAL_QUOTED), ("full", FINAL_QUOTED)],
    ids=["hidden", "collapsed", "full"],
)
async def test_slash_chat_streams_and_ends_with_the_exact_answer(
    model, tokenizer, tmp_path, mode, final
) -> None:
    async with running_bot(model, tokenizer, tmp_path, chat={"reasoning": mode}) as bot:
        dc = bot.dc
        assert sorted(c["name"] for c in dc.commands) == [
            "chat",
            "help",
            "id",
            "reload",
            "reset",
            "stats",
            "stop",
            "system",
        ]
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=bot.guild)
        await dc.wait_for(lambda: is_done(rec.original))
        await bot.wait_idle()

        assert rec.callback_type == CALLBACK_DEFERRED_MESSAGE and not rec.original.is_ephemeral
        assert rec.original.content == final and rec.followups == []
        shown = rec.original.history
        assert shown[0].content == "" and shown[0].flags & (1 << 7)  # deferred: "thinking…"
        streaming = shown[1:-1]
        assert streaming, "the answer was shown only once"
        for snapshot in streaming:
            assert snapshot.content.endswith("▌")
            assert snapshot.components[0]["components"][0]["label"] == "Stop"
        edits = dc.calls_to("PATCH /webhooks/{application_id}/{token}/messages/@original")
        assert edits and all(c.json["allowed_mentions"] == {"parse": []} for c in edits)

        channel = bot.guild.default_channel
        stored = await bot.stored(channel.id, bot.alice)
        assert [(m.role, m.content, m.status) for m in stored] == [
            ("user", "hi", "complete"),
            ("assistant", ANSWER, "complete"),
        ]
        assert stored[1].reasoning == REASONING


async def test_commands_sync_to_configured_guilds(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path, guild_commands=True) as bot:
        dc = bot.dc
        assert dc.commands == []
        names = sorted(c["name"] for c in dc.guild_commands[bot.guild.id])
        assert names == ["chat", "help", "id", "reload", "reset", "stats", "stop", "system"]
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=bot.guild)
        assert rec.payload["data"]["guild_id"] == str(bot.guild.id)
        await dc.wait_for(lambda: is_done(rec.original))
        assert rec.original.content == FINAL_QUOTED


async def test_dm_and_mention_are_answered_without_the_content_intent(
    model, tokenizer, tmp_path
) -> None:
    # The app has no privileged intents: Discord still delivers DMs and mentions of the bot.
    async with running_bot(
        model, tokenizer, tmp_path, fake_options={"privileged_intents": 0}
    ) as bot:
        dc = bot.dc
        assert not dc.sessions[0].intents & INTENT_MESSAGE_CONTENT
        dm = await dc.inject_message(bot.alice, "hi in private")
        dm_channel = dc.dm_channel(bot.alice)
        [dm_reply] = await dc.wait_for(
            lambda: [m for m in bot.bot_messages(dm_channel) if is_done(m)]
        )
        assert dm_reply.content == FINAL_QUOTED and dm_reply.referenced is dm

        channel = bot.guild.default_channel
        plain = await dc.inject_message(bot.mona, "just chatting", guild=bot.guild)
        asked = await dc.inject_message(bot.mona, "what now?", guild=bot.guild, mention_bot=True)
        [reply] = await dc.wait_for(lambda: [m for m in bot.bot_messages(channel) if is_done(m)])
        await bot.wait_idle()
        assert reply.content == FINAL_QUOTED and reply.referenced is asked
        assert all(m.referenced is not plain for m in bot.bot_messages(channel))
        assert len(bot.bot_messages(channel)) == 1
        assert all(s.components for s in reply.history[:-1])  # Stop button while it streamed

        stored_dm = await bot.stored(dm_channel.id, bot.alice)
        stored_guild = await bot.stored(channel.id, bot.mona)
        assert [m.content for m in stored_dm] == ["hi in private", ANSWER]
        assert [m.content for m in stored_guild] == ["what now?", ANSWER]  # mention stripped


async def test_commands_work_in_direct_messages(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc = bot.dc
        rec = await dc.slash(bot.alice, "chat", prompt="hi")
        await dc.wait_for(lambda: is_done(rec.original))
        assert rec.channel.is_dm and rec.original.content == FINAL_QUOTED
        # /system is for admins in a DM too, as everywhere else.
        refused = await dc.slash(bot.alice, "system", text="Be terse.")
        await dc.wait_for(lambda: refused.original and refused.original.content)
        assert refused.original.is_ephemeral
        assert refused.original.content == DISCORD.admins_only("system")
        prompt = await bot.app.service.system_prompt("discord", str(rec.channel.id))
        assert not prompt.is_custom


async def test_queue_position_is_shown_while_waiting(model, tokenizer, tmp_path) -> None:
    with throttled(model, 0.03):
        async with running_bot(model, tokenizer, tmp_path, num_slots=1) as bot:
            dc = bot.dc
            first = await dc.slash(bot.alice, "chat", prompt="one", guild=bot.guild)
            await dc.wait_for(lambda: first.original and first.original.num_edits >= 1)
            second = await dc.slash(bot.mona, "chat", prompt="two", guild=bot.guild)
            await dc.wait_for(lambda: is_done(second.original), timeout=10)
            assert is_done(first.original)
            texts = [s.content for s in second.original.history]
            assert "-# ⏳ In queue: position 1 ▌" in texts
            assert second.original.content == FINAL_QUOTED == first.original.content


async def test_reset_starts_a_new_dialogue(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc = bot.dc
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=bot.guild)
        await dc.wait_for(lambda: is_done(rec.original))
        await bot.wait_idle()
        key = ChatKey("discord", str(bot.guild.default_channel.id), str(bot.alice.id))
        assert len(await bot.app.store.history(key)) == 2
        reset = await dc.slash(bot.alice, "reset", guild=bot.guild)
        await dc.wait_for(lambda: reset.original and reset.original.content)
        assert reset.original.is_ephemeral
        assert reset.original.content == RESET_DONE
        assert await bot.app.store.history(key) == []
        assert len(await bot.stored(bot.guild.default_channel.id, bot.alice)) == 2  # kept


async def test_system_shows_and_help_explains(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path, chat={"system_prompt": "Be kind."}) as bot:
        dc = bot.dc
        shown = await dc.slash(bot.root, "system", guild=bot.guild)
        await dc.wait_for(lambda: shown.original and shown.original.content)
        assert shown.original.is_ephemeral
        assert shown.original.content == "System prompt (the default):\n\n> Be kind."
        helped = await dc.slash(bot.alice, "help", guild=bot.guild)
        await dc.wait_for(lambda: helped.original)
        assert helped.callback_type == CALLBACK_MESSAGE and helped.original.is_ephemeral
        assert "/chat" in helped.original.content and "/stop" in helped.original.content


async def test_long_answer_continues_in_follow_ups(tokenizer, tmp_path) -> None:
    words = longest_words(tokenizer, 110)
    answer = " ".join(words)
    assert len(answer) > MAX_CONTENT
    model = build_scripted_model(tokenizer, f"Hm. </think>\n\n{answer}", hidden_size=128)
    async with running_bot(model, tokenizer, tmp_path, chat={"reasoning": "hidden"}) as bot:
        dc = bot.dc
        rec = await dc.slash(bot.alice, "chat", prompt="long please", guild=bot.guild)
        await dc.wait_for(lambda: rec.followups and is_done(rec.followups[-1]), timeout=15)
        await bot.wait_idle()
        messages = [rec.original, *rec.followups]
        assert len(messages) == 2
        assert all(len(m.content) <= MAX_CONTENT for m in messages)
        assert " ".join(m.content for m in messages) == answer  # split between two words
        assert all(not m.components and not m.is_ephemeral for m in messages)
        for message in messages:
            assert_paced(message)
        # The Stop button sits under the message that is still changing.
        assert rec.original.history[-2].components and not rec.original.history[-1].components
        stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
        assert stored[-1].content == answer and stored[-1].status == "complete"


async def test_two_users_in_one_channel_have_their_own_dialogues(
    model, tokenizer, tmp_path
) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc = bot.dc
        first = await dc.slash(bot.alice, "chat", prompt="from alice", guild=bot.guild)
        second = await dc.slash(bot.mona, "chat", prompt="from mona", guild=bot.guild)
        await dc.wait_for(lambda: is_done(first.original) and is_done(second.original))
        await asyncio.sleep(0)
        channel = bot.guild.default_channel.id
        assert [m.content for m in await bot.stored(channel, bot.alice)] == ["from alice", ANSWER]
        assert [m.content for m in await bot.stored(channel, bot.mona)] == ["from mona", ANSWER]


async def test_stats_shows_the_figures_to_the_configured_admins_only(
    model, tokenizer, tmp_path
) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc = bot.dc
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=bot.guild)
        await dc.wait_for(lambda: is_done(rec.original))
        await bot.wait_idle()
        shown = {}
        # Mona manages the server, but the figures are the whole bot's: not hers to see.
        for name, user in (("alice", bot.alice), ("mona", bot.mona), ("root", bot.root)):
            stats = await dc.slash(user, "stats", guild=bot.guild)
            await dc.wait_for(lambda stats=stats: stats.original and stats.original.content)
            assert stats.original.is_ephemeral
            shown[name] = stats.original.content
        assert bot.frontend.is_up  # what /healthz asks
    assert not bot.frontend.is_up  # closed: /healthz would answer 503
    assert shown["alice"] == shown["mona"] == ADMINS_ONLY_STATS
    assert shown["root"].startswith("Replies: 1 (complete 1)")
    assert "Now: 0 generating, 0 waiting" in shown["root"]
