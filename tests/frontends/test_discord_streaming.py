"""Discord end to end: pacing per message, 429s, and interaction tokens that expire mid-answer."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.frontends.discord_harness import (
    EDIT,
    EDIT_ORIGINAL,
    SEND,
    assert_paced,
    is_done,
    longest_words,
    running_bot,
    throttled,
)
from tests.support.models import build_scripted_model

HIDDEN = {"reasoning": "hidden"}


@pytest.fixture
def answer(tokenizer: Any) -> str:
    return " ".join(longest_words(tokenizer, 50))


@pytest.fixture
def model(tokenizer: Any, answer: str) -> Any:
    return build_scripted_model(tokenizer, f"Hm. </think>\n\n{answer}", hidden_size=128)


def finished_in_channel(bot: Any, channel: Any) -> list[Any]:
    """Finished bot messages in the channel that are not interaction responses."""
    return [m for m in bot.bot_messages(channel) if m.kind == "channel" and is_done(m)]


async def test_each_message_is_edited_at_most_once_per_interval(
    model, tokenizer, tmp_path, answer
) -> None:
    with throttled(model, 0.03):  # about 1.6 s of writing: several edits
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            rec = await bot.dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            await bot.dc.wait_for(lambda: is_done(rec.original), timeout=10)
            assert rec.original.content == answer
            edits = rec.original.history[1:]
            assert len(edits) >= 4, "too few edits to say anything about pacing"
            assert_paced(rec.original)
            # The answer grew edit by edit: each text is a prefix of the next (markers aside).
            texts = [e.content.removesuffix(" ▌") for e in edits if answer[:4] in e.content]
            assert all(b.startswith(a) for a, b in itertools.pairwise(texts))


async def test_a_429_on_an_edit_is_waited_out_and_the_answer_lands(
    model, tokenizer, tmp_path, answer
) -> None:
    with throttled(model, 0.02):
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            dc.rate_limit(EDIT_ORIGINAL, times=1, retry_after=0.3)
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            await dc.wait_for(lambda: is_done(rec.original), timeout=10)
            assert rec.original.content == answer
            calls = dc.calls_to(EDIT_ORIGINAL)
            assert [c.status for c in calls[:2]] == [429, 200]
            assert calls[1].at - calls[0].at >= 0.3 * 0.9  # waited as told (loop clock slack)
            # discord.py held the edit back 0.3 s and retried it by itself: the next edit is
            # still an edit interval after it landed, not straight back into the limit.
            assert_paced(rec.original)


async def test_429s_beyond_discord_py_retries_are_retried_by_the_renderer(
    model, tokenizer, tmp_path, answer
) -> None:
    # discord.py's webhook adapter tries 5 times, then raises; the sink turns that into
    # RetryAfter and the renderer tries again (with the newest text) after Retry-After.
    async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
        dc = bot.dc
        dc.rate_limit(EDIT_ORIGINAL, times=5, retry_after=0.05)
        rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
        await dc.wait_for(lambda: is_done(rec.original), timeout=10)
        assert rec.original.content == answer
        statuses = [c.status for c in dc.calls_to(EDIT_ORIGINAL)]
        assert statuses[:6] == [429] * 5 + [200]
        stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
        assert stored[-1].status == "complete"
        # discord.py's 5 tries are one failure of the sink: counted once, as rate limited.
        errors = bot.app.metrics.snapshot().platform_errors
        assert errors[("discord", "rate_limited")] == 1


async def test_after_a_429_the_channel_s_calls_are_spaced_from_the_answer_not_burst(
    model, tokenizer, tmp_path, answer
) -> None:
    # Two answers stream into one channel; discord.py waits out a 429 on one edit inside the
    # call, holding the other answer's edits (same channel bucket) back meanwhile. They must
    # not all fire together when the wait ends: every call of the channel comes one channel
    # gap (edit_interval / 4 = 0.25 s here) after the one before it was answered.
    gap = 0.25
    with throttled(model, 0.05):
        async with running_bot(
            model, tokenizer, tmp_path, chat=HIDDEN, discord={"edit_interval": 1.0}
        ) as bot:
            dc = bot.dc
            channel = bot.guild.default_channel
            for user in (bot.alice, bot.bob):
                await dc.inject_message(user, "go", guild=bot.guild, mention_bot=True)
            await dc.wait_for(lambda: len(bot.bot_messages(channel)) == 2, timeout=10)
            dc.rate_limit(EDIT, times=1, retry_after=0.5)
            await dc.wait_for(
                lambda: [m for m in bot.bot_messages(channel) if is_done(m)][1:], timeout=20
            )
            await bot.wait_idle()
            assert [m.content for m in bot.bot_messages(channel)] == [answer, answer]
            calls = [c for c in dc.calls if c.route in (SEND, EDIT)]
            [limited] = [i for i, c in enumerate(calls) if c.status == 429]
            retried = calls[limited + 1]
            # discord.py's retry of the same edit is the next call, 0.5 s later as told ...
            assert (retried.path, retried.status) == (calls[limited].path, 200)
            assert retried.at - calls[limited].at >= 0.5 * 0.9  # loop clock slack
            # ... and no call after it follows its predecessor closer than the channel gap
            # (a burst would put them milliseconds apart); 0.05 s allows for loopback latency.
            later = calls[limited + 1 :]
            assert len(later) >= 3, "too few calls after the 429 to say anything"
            gaps = [b.at - a.at for a, b in itertools.pairwise(later)]
            assert min(gaps) >= gap - 0.05, gaps


async def test_an_expired_token_moves_the_answer_to_a_channel_message(
    model, tokenizer, tmp_path, answer
) -> None:
    # The server's tokens die after 0.6 s, though the bot expects 15 minutes: it notices when
    # Discord refuses an edit and continues in a normal message that replies to the first.
    with throttled(model, 0.025):  # about 1.3 s of writing
        async with running_bot(
            model, tokenizer, tmp_path, chat=HIDDEN, fake_options={"token_ttl": 0.6}
        ) as bot:
            dc = bot.dc
            channel = bot.guild.default_channel
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            [moved] = await dc.wait_for(lambda: finished_in_channel(bot, channel), timeout=10)
            await bot.wait_idle()
            assert moved.content == answer and moved.referenced is rec.original
            assert 401 in [c.status for c in dc.calls_to(EDIT_ORIGINAL)]
            assert rec.original.history[-1].at < rec.expires_at
            assert_paced(moved)
            stored = await bot.stored(channel.id, bot.alice)
            assert (stored[-1].content, stored[-1].status) == (answer, "complete")


async def test_a_token_about_to_expire_is_left_with_a_pointer(
    model, tokenizer, tmp_path, answer
) -> None:
    # The bot knows the token's lifetime: shortly before it ends, it moves the answer on its
    # own and points the old message to the new one.
    with throttled(model, 0.025):
        async with running_bot(
            model,
            tokenizer,
            tmp_path,
            chat=HIDDEN,
            fake_options={"token_ttl": 1.0},
            frontend_options={"token_ttl": 1.0, "token_margin": 0.6},
        ) as bot:
            dc = bot.dc
            channel = bot.guild.default_channel
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            [moved] = await dc.wait_for(lambda: finished_in_channel(bot, channel), timeout=10)
            await bot.wait_idle()
            assert moved.content == answer and moved.referenced is rec.original
            url = f"https://discord.com/channels/{bot.guild.id}/{channel.id}/{moved.id}"
            assert rec.original.content == f"-# ⤵️ This answer continues in a new message: {url}"
            assert rec.original.components == []
            assert all(c.status != 401 for c in dc.calls_to(EDIT_ORIGINAL))
            assert_paced(rec.original)


async def test_an_answer_that_starts_after_the_deadline_points_the_placeholder_to_it(
    model, tokenizer, tmp_path, answer
) -> None:
    # E.g. a long wait in the queue: the deferred "thinking…" never shows text of its own.
    options = {"token_ttl": 0.5, "token_margin": 0.5}
    async with running_bot(
        model, tokenizer, tmp_path, chat=HIDDEN, frontend_options=options
    ) as bot:
        dc = bot.dc
        channel = bot.guild.default_channel
        rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
        [moved] = await dc.wait_for(lambda: finished_in_channel(bot, channel), timeout=10)
        await bot.wait_idle()
        assert moved.content == answer and moved.referenced is None
        url = f"https://discord.com/channels/{bot.guild.id}/{channel.id}/{moved.id}"
        assert [s.content for s in rec.original.history] == [
            "",
            f"-# ⤵️ This answer continues in a new message: {url}",
        ]
