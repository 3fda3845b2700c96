"""Groups end to end: who triggers an answer, per-user dialogues, the group budget, Stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.chat.commands import UNKNOWN_COMMAND
from bot.chat.turn import NOT_SUPPORTED
from bot.types import ChatKey
from tests.frontends.telegram_harness import (
    ADMIN,
    ANSWER,
    ANSWER_SHOWN,
    Bot,
    Scripted,
    assert_budget,
    assert_paced,
    build_scripted,
    final_texts,
    running_bot,
)

GROUP = -1001234567890
ALICE = 501
BOB = 502


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=40, answer=ANSWER)


def _full(scripted: Scripted) -> str:
    return f"{scripted.reasoning}\n{ANSWER_SHOWN}"


async def _answered(bot: Bot, count: int) -> list[str]:
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, GROUP)) >= count)
    await bot.wait_idle()
    return final_texts(bot.tg, GROUP)


async def test_who_gets_an_answer_in_a_group(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    # Five answers and notices in a row: a roomy group budget, so that on a slow machine (more
    # edits per answer) the per-minute budget, tested below, does not hold the last ones back.
    roomy = {"group_edits_per_minute": 1000}
    async with running_bot(scripted.model, tokenizer, tmp_path, telegram=roomy) as bot:
        tg = bot.tg
        tg.add_chat(GROUP)
        tg.push_text(GROUP, "just chatting among ourselves", user_id=ALICE)
        tg.push_command(GROUP, "ask", "not for you", user_id=ALICE)  # fine: /ask is ours
        tg.push_media(GROUP, "sticker", user_id=BOB)
        first = await _answered(bot, 1)
        mention = tg.push_text(GROUP, "what do you think?", mention=True, user_id=ALICE)
        await _answered(bot, 2)
        answer_to_alice = tg.chat(GROUP).bot_messages[-1]
        tg.push_text(GROUP, "and then?", reply_to=answer_to_alice.message_id, user_id=BOB)
        await _answered(bot, 3)
        tg.push_command(GROUP, "dance", user_id=BOB)  # another bot's command, maybe: ignored
        tg.push_command(GROUP, "dance", user_id=BOB, with_username=True)
        tg.push_media(GROUP, "photo", user_id=BOB, reply_to=answer_to_alice.message_id)
        texts = await _answered(bot, 5)
        alice = await bot.stored(GROUP, ALICE)
        bob = await bot.stored(GROUP, BOB)
    assert first == [_full(scripted)]
    assert texts[:3] == [_full(scripted)] * 3
    assert sorted(texts[3:]) == sorted([UNKNOWN_COMMAND, NOT_SUPPORTED])
    assert answer_to_alice.reply_to_message_id == mention["message_id"]
    # Each user has their own dialogue; the mention is not part of the question.
    assert [m.content for m in alice if m.role == "user"] == ["not for you", "what do you think?"]
    # Bob replied to the answer to Alice: it is quoted (without its reasoning) in his turn.
    assert [m.content for m in bob if m.role == "user"] == [
        f"(Replying to your message:)\n> {ANSWER_SHOWN}\n\nand then?"
    ]
    assert not tg.chat(GROUP).drafts  # groups get send + edit
    assert len(tg.chat(GROUP).bot_messages) == 5


async def test_group_pacing_and_budget(scripted: Scripted, tokenizer: Any, tmp_path: Path) -> None:
    scripted.throttle.delay = 0.02
    async with running_bot(
        scripted.model,
        tokenizer,
        tmp_path,
        telegram={"group_edits_per_minute": 5},
        # The per-minute budget over a 2-second window keeps the test short.
        frontend_options={"group_window": 2.0},
    ) as bot:
        bot.tg.add_chat(GROUP)
        bot.tg.push_text(GROUP, "first question", mention=True, user_id=ALICE)
        bot.tg.push_text(GROUP, "second question", mention=True, user_id=BOB)
        texts = await _answered(bot, 2)
    calls = bot.paced_calls(GROUP)
    assert texts == [_full(scripted)] * 2
    assert_paced(calls, interval=0.2)
    assert_budget(calls, max_calls=5, window=2.0)
    # The budget, not the edit interval, set the pace: the answers took several windows.
    assert calls[-1].at - calls[0].at > 2.0


async def test_stop_button_in_a_group(scripted: Scripted, tokenizer: Any, tmp_path: Path) -> None:
    scripted.throttle.delay = 0.05
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        tg = bot.tg
        tg.add_chat(GROUP)
        tg.push_text(GROUP, "take your time", mention=True, user_id=ALICE)
        streaming = await tg.wait_for(
            lambda: next((m for m in tg.chat(GROUP).bot_messages if m.buttons), None)
        )
        data = streaming.buttons[0]["callback_data"]
        refused = tg.push_callback(GROUP, streaming.message_id, data, user_id=BOB)
        await tg.wait_for(lambda: tg.callback_queries[refused].is_answered)
        assert bot.app.service.is_answering(ChatKey("telegram", str(GROUP), str(ALICE)))
        stopped = tg.push_callback(GROUP, streaming.message_id, data, user_id=ADMIN)
        texts = await _answered(bot, 1)
        stored = await bot.stored(GROUP, ALICE)
    assert tg.callback_queries[refused].answer == {
        "text": "Only the person who asked (or an admin) can stop this answer."
    }
    assert tg.callback_queries[stopped].answer == {"text": "Stopping…"}
    assert stored[-1].status == "stopped"
    assert texts == [streaming.text] and texts[0].endswith("(Stopped.)")
    assert streaming.reply_markup is None  # the button goes with the last edit


async def test_final_text_lands_after_429_and_5xx_in_a_group(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.02
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.add_chat(GROUP)
        bot.tg.inject_error("sendMessage", 502, chat_id=GROUP)
        bot.tg.inject_retry_after("editMessageText", 1, chat_id=GROUP, times=2)
        bot.tg.push_text(GROUP, "hello", mention=True, user_id=ALICE)
        texts = await _answered(bot, 1)
    statuses = [c.status for c in bot.paced_calls(GROUP)]
    assert statuses[:4] == [502, 200, 429, 429]
    assert texts == [_full(scripted)]
    edits = bot.tg.calls_of("editMessageText", chat_id=GROUP)
    # After each 429 the chat waited as asked (1 s), not just the edit interval.
    assert edits[1].at - edits[0].at >= 1.0 - 0.05
    assert edits[2].at - edits[1].at >= 1.0 - 0.05
