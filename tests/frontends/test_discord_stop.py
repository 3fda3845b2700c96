"""Discord end to end: the Stop button, /stop, and shutting down mid-answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.frontends.discord_ui.answers import RESTARTING
from bot.types import ChatKey
from tests.fakes.discord_state import (
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    InteractionRecord,
    MessageRecord,
)
from tests.frontends.backends import BACKENDS, on_backend
from tests.frontends.discord_harness import (
    SEND,
    is_done,
    longest_words,
    running_bot,
    throttled,
)
from tests.support.models import build_scripted_model

HIDDEN = {"reasoning": "hidden"}
STOPPED = "\n\n-# (Stopped.)"
INTERRUPTED = "\n\n-# (Interrupted: the bot is restarting. Send your message again in a moment.)"
NUM_WORDS = 60


@pytest.fixture
def answer(tokenizer: Any) -> str:
    return " ".join(longest_words(tokenizer, NUM_WORDS))


@pytest.fixture(params=BACKENDS)
def model(request: pytest.FixtureRequest, tokenizer: Any, answer: str) -> Any:
    """The scripted model, or the fake OpenAI server saying the same (backend = "openai")."""
    script = f"Hm. </think>\n\n{answer}"
    if request.param == "openai":
        return on_backend("openai", None, script)
    return build_scripted_model(tokenizer, script, hidden_size=128)


def stop_id(message: MessageRecord) -> str:
    [custom_id] = [c for c in message.custom_ids() if c.startswith("r1bot:stop:")]
    return custom_id


async def writing(dc: Any, rec: InteractionRecord, answer: str) -> MessageRecord:
    """Wait until the answer shows some of its text, with the Stop button under it."""
    first_word = answer.split()[0]
    return await dc.wait_for(
        lambda: (
            rec.original
            if rec.original and first_word in rec.original.content and rec.original.components
            else None
        )
    )


async def assert_stops_generating(throttle: Any) -> None:
    """The engine took no more steps: the cancellation reached the model, not just the UI."""
    steps = throttle.num_steps
    await asyncio.sleep(0.3)
    assert throttle.num_steps == steps


async def test_stop_button_cancels_generation_in_the_engine(
    model, tokenizer, tmp_path, answer
) -> None:
    with throttled(model, 0.05) as throttle:  # 3 s if nobody stops it
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            shown = await writing(dc, rec, answer)
            assert stop_id(shown) == f"r1bot:stop:{bot.alice.id}"
            click = await dc.click(bot.alice, shown, stop_id(shown))
            await dc.wait_for(lambda: is_done(rec.original))
            await bot.wait_idle()

            assert click.callback_type == CALLBACK_DEFERRED_UPDATE
            assert rec.original.content.endswith(STOPPED)
            partial = rec.original.content.removesuffix(STOPPED)
            assert partial and answer.startswith(partial) and partial != answer
            stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
            assert (stored[-1].status, stored[-1].content) == ("stopped", partial)
            assert stored[-1].num_generated_tokens < NUM_WORDS
            await assert_stops_generating(throttle)


async def test_only_the_asker_or_an_admin_may_press_stop(
    model, tokenizer, tmp_path, answer
) -> None:
    with throttled(model, 0.05):
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            shown = await writing(dc, rec, answer)
            refused = await dc.click(bot.bob, shown, stop_id(shown))
            await dc.wait_for(lambda: refused.original)
            assert refused.callback_type == CALLBACK_MESSAGE and refused.original.is_ephemeral
            assert refused.original.content.startswith("Only the person who asked")
            assert bot.app.service.is_answering(
                ChatKey("discord", str(bot.guild.default_channel.id), str(bot.alice.id))
            )

            stopped = await dc.click(bot.mona, shown, stop_id(shown))  # Manage Server
            await dc.wait_for(lambda: is_done(rec.original))
            assert stopped.callback_type == CALLBACK_DEFERRED_UPDATE
            assert rec.original.content.endswith(STOPPED)


async def test_slash_stop_cancels_the_callers_answer(model, tokenizer, tmp_path, answer) -> None:
    with throttled(model, 0.05) as throttle:
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            nothing = await dc.slash(bot.alice, "stop", guild=bot.guild)
            await dc.wait_for(lambda: nothing.original)
            assert nothing.original.content == "There is no answer to stop."
            assert nothing.original.is_ephemeral

            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            await writing(dc, rec, answer)
            stop = await dc.slash(bot.alice, "stop", guild=bot.guild)
            await dc.wait_for(lambda: is_done(rec.original))
            assert stop.original.is_ephemeral and stop.original.content == "Stopping your answer."
            assert rec.original.content.endswith(STOPPED)
            stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
            assert stored[-1].status == "stopped"
            await assert_stops_generating(throttle)


async def test_shutdown_lands_the_text_so_far_with_a_note(
    model, tokenizer, tmp_path, answer
) -> None:
    with throttled(model, 0.05):
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            rec = await dc.slash(bot.alice, "chat", prompt="go", guild=bot.guild)
            await writing(dc, rec, answer)
            dm = await dc.inject_message(bot.bob, "hello")
            await dc.wait_for(lambda: bot.bot_messages(dm.channel))

            await bot.frontend.stop_receiving()
            late = await dc.slash(bot.mona, "chat", prompt="too late", guild=bot.guild)
            await dc.wait_for(lambda: late.original)
            assert late.original.is_ephemeral and late.original.content == RESTARTING
            await bot.app.service.interrupt_all()
            await bot.frontend.close()

            note = INTERRUPTED
            assert rec.original.content.endswith(note) and not rec.original.components
            stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
            assert stored[-1].status == "interrupted"
            assert stored[-1].content == rec.original.content.removesuffix(note)
            assert await bot.stored(bot.guild.default_channel.id, bot.mona) == []
            [dm_reply] = bot.bot_messages(dm.channel)
            # Bob's answer had not shown any text yet: the note alone is its final text.
            assert dm_reply.content.endswith(note.strip()) and dm_reply.referenced is dm
            assert not dm_reply.components


async def test_losing_the_right_to_write_stops_the_model_with_a_warning(
    model, tokenizer, tmp_path, caplog
) -> None:
    with throttled(model, 0.05), caplog.at_level(logging.WARNING):  # 3 s if nobody stops it
        async with running_bot(model, tokenizer, tmp_path, chat=HIDDEN) as bot:
            dc = bot.dc
            dc.fail(SEND, 403, code=50013, message="Missing Permissions", times=100)
            await dc.inject_message(bot.mona, "still there?", guild=bot.guild, mention_bot=True)
            await dc.wait_for(lambda: dc.calls_to(SEND))
            await bot.wait_idle()
            stored = await bot.stored_once_ended(bot.guild.default_channel.id, bot.mona)
    assert stored[-1].status == "stopped"
    assert not bot.bot_messages(bot.guild.default_channel)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING for r in refusals)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a lost permission"
