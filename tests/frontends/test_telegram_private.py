"""Private chats end to end: fake Bot API, real PTB, ChatService, SQLite and the scripted model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.redact import REDACTED
from bot.frontends.telegram_ui.replies import CONTROL_TEXT
from tests.frontends.backends import BACKENDS
from tests.frontends.telegram_harness import (
    ANSWER,
    ANSWER_SHOWN,
    Bot,
    Scripted,
    assert_paced,
    build_scripted,
    final_texts,
    on_backend,
    running_bot,
)

USER = 42
OTHER = 43


@pytest.fixture(scope="module")
def local_scripted(tokenizer: Any) -> Scripted:
    """40 words of reasoning, then a short Markdown answer."""
    return build_scripted(tokenizer, num_reasoning_words=40, answer=ANSWER)


@pytest.fixture(scope="module", params=BACKENDS)
def scripted(request: pytest.FixtureRequest, local_scripted: Scripted) -> Scripted:
    """The same words from the local engine, or from the fake OpenAI server."""
    return on_backend(request.param, local_scripted)


async def _answered(bot: Bot, chat_id: int, count: int = 1) -> list[str]:
    """Wait until `count` answers are complete in the chat; returns what the chat shows."""
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, chat_id)) >= count)
    await bot.wait_idle()
    return bot.tg.chat(chat_id).texts


async def test_answer_lands_formatted_and_stored(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        question = bot.tg.push_text(USER, "What is the answer?")
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    # The Stop message is gone; one message remains: reasoning collapsed above the answer.
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    message = bot.tg.chat(USER).last_bot_message
    assert message is not None
    assert message.raw is not None and message.raw.startswith("<blockquote expandable>")
    assert "<b>forty-two</b>" in message.raw and "<code>main.py</code>" in message.raw
    assert message.reply_markup is None
    assert message.entities[0]["type"] == "expandable_blockquote"
    assert bot.tg.current_draft(USER) is None
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "What is the answer?", "complete"),
        ("assistant", scripted.answer, "complete"),
    ]
    assert stored[1].reasoning == scripted.reasoning
    assert "typing" in [a.action for a in bot.tg.chat(USER).actions]
    control = bot.tg.message(USER, question["message_id"] + 1)
    assert (control.raw, control.is_deleted) == (CONTROL_TEXT, True)


async def test_streams_drafts_then_sends_the_final_message(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.03  # about 2 s for the whole script
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "Think it over")
        texts = await _answered(bot, USER)
    chat = bot.tg.chat(USER)
    drafts = [d.text for d in chat.drafts]
    assert len(drafts) >= 3
    assert all(text.endswith("▌") for text in drafts)  # each marked as still being written
    assert any("Thinking…" in text for text in drafts)
    # Reasoning grows draft by draft; every draft shows a prefix of what lands at the end.
    assert drafts[-1].startswith(scripted.reasoning[:20])
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    assert len({d.draft_id for d in chat.drafts}) == 1
    assert_paced(bot.paced_calls(USER), interval=0.2)


async def test_drafts_refused_fall_back_to_send_and_edit(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.02
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.inject_error(
            "sendMessageDraft", 400, description="Bad Request: TEXTDRAFT_PEER_INVALID"
        )
        bot.tg.push_text(USER, "hello")
        texts = await _answered(bot, USER)
        bot.tg.push_text(USER, "again")
        await _answered(bot, USER, count=2)
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    assert bot.tg.calls_of("editMessageText", chat_id=USER)
    # The refusal is remembered for this chat: the second answer does not try drafts.
    assert len(bot.tg.calls_of("sendMessageDraft")) == 1


async def _after_stop_message(bot: Bot, chat_id: int) -> None:
    """Until the Stop message is there (the answer's own sendMessage comes after it)."""
    await bot.tg.wait_for(lambda: bot.tg.chat(chat_id).last_bot_message)


async def test_unparsable_html_is_sent_as_plain_text(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "hello")
        await _after_stop_message(bot, USER)
        bot.tg.inject_error(
            "sendMessage",
            400,
            description="Bad Request: can't parse entities: unsupported start tag",
            chat_id=USER,
        )
        texts = await _answered(bot, USER)
    message = bot.tg.chat(USER).last_bot_message
    assert message is not None
    assert [c.status for c in bot.tg.calls_of("sendMessage", chat_id=USER)] == [200, 400, 200]
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    assert message.parse_mode is None and message.entities == ()


async def test_stop_button_stops_the_model(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.05  # the whole script would take 3 s
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "Take your time")
        chat = bot.tg.chat(USER)
        control = await bot.tg.wait_for(lambda: chat.last_bot_message)
        assert control.raw == CONTROL_TEXT
        await bot.tg.wait_for(lambda: any("▌" in d.text and len(d.text) > 40 for d in chat.drafts))
        data = control.buttons[0]["callback_data"]
        query_id = bot.tg.push_callback(USER, control.message_id, data)
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert bot.tg.callback_queries[query_id].answer == {"text": "Stopping…"}
    assert stored[-1].status == "stopped"
    assert stored[-1].num_generated_tokens < scripted.num_tokens
    assert len(texts) == 1 and texts[0].endswith("Stopped.)")
    assert ANSWER_SHOWN not in texts[0]
    assert control.is_deleted


async def test_stop_command_stops_the_model(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.05
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "Take your time")
        chat = bot.tg.chat(USER)
        await bot.tg.wait_for(lambda: chat.drafts)
        bot.tg.push_command(USER, "stop")
        texts = await _answered(bot, USER)
        bot.tg.push_command(USER, "stop")
        await bot.tg.wait_for(lambda: len(chat.texts) == 2)
        stored = await bot.stored(USER, USER)
    assert stored[-1].status == "stopped"
    assert texts[0].endswith("Stopped.)")
    assert chat.texts[1] == "There is no answer to stop."


async def test_a_second_message_while_answering_is_refused(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.03
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "first")
        chat = bot.tg.chat(USER)
        await bot.tg.wait_for(lambda: chat.drafts)
        bot.tg.push_text(USER, "second")
        await bot.tg.wait_for(lambda: any("still answering" in t for t in chat.texts))
        await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert [m.content for m in stored if m.role == "user"] == ["first"]


async def test_retry_after_in_one_chat_does_not_pause_another(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.03
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.inject_retry_after("sendMessageDraft", 3, chat_id=USER)
        bot.tg.push_text(USER, "first")
        refused = await bot.tg.wait_for(
            lambda: next(iter(bot.tg.calls_of("sendMessageDraft", chat_id=USER, is_ok=False)), None)
        )
        scripted.throttle.delay = 0.0
        bot.tg.push_text(OTHER, "second")
        other_done = await bot.tg.wait_for(lambda: final_texts(bot.tg, OTHER))
        other_started = bot.paced_calls(OTHER)[0].at
        await _answered(bot, USER)
    assert other_done == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    after_refusal = [c for c in bot.paced_calls(USER) if c.at > refused.at]
    assert after_refusal, "the first chat's answer never landed"
    # The other chat was answered while the first chat waited out its 429 (its first call came
    # in the wait; how long the whole answer takes depends on the machine) ...
    assert other_started < after_refusal[0].at
    # ... and the first chat waited as long as Telegram asked.
    assert after_refusal[0].at - refused.at >= 3.0 - 0.05
    assert bot.tg.chat(USER).texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]


async def test_final_text_lands_after_server_errors(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "hello")
        await _after_stop_message(bot, USER)
        bot.tg.inject_error("sendMessage", 502, chat_id=USER, raw_body="<html>Bad Gateway</html>")
        bot.tg.inject_error("sendMessage", 500, chat_id=USER)
        texts = await _answered(bot, USER)
    statuses = [c.status for c in bot.tg.calls_of("sendMessage", chat_id=USER)]
    assert statuses[1:] == [502, 500, 200]
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]


async def test_shutdown_lands_the_text_so_far_with_a_note(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.05
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "Take your time")
        chat = bot.tg.chat(USER)
        await bot.tg.wait_for(lambda: any(len(d.text) > 60 for d in chat.drafts))
        shown = chat.drafts[-1].text.removesuffix(" ▌")
        await bot.close()
        stored = await bot.stored(USER, USER)
    assert stored[-1].status == "interrupted"
    (text,) = chat.texts
    assert text.startswith(shown.split("\n")[0][:40])
    assert "Interrupted" in text and "restarting" in text
    assert stored[-1].reasoning.startswith(text.split("\n")[0][:40])


async def test_bad_input_gets_one_line_and_nothing_is_stored(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"max_message_chars": 50}
    ) as bot:
        chat = bot.tg.add_chat(USER)
        bot.tg.push_text(USER, "x" * 51)
        await bot.tg.wait_for(lambda: len(chat.texts) == 1)
        bot.tg.push_media(USER, "sticker")
        await bot.tg.wait_for(lambda: len(chat.texts) == 2)
        bot.tg.push_media(USER, "voice")
        await bot.tg.wait_for(lambda: len(chat.texts) == 3)
        bot.tg.push_text(USER, "   ")
        await bot.tg.wait_for(lambda: len(chat.texts) == 4)
        stored = await bot.stored(USER, USER)
    assert chat.texts[0].startswith("Your message is too long (51 characters; the limit is 50)")
    assert (
        chat.texts[1]
        == chat.texts[2]
        == (
            "I can only read text messages and text files (.txt, .md, .csv, source code); "
            "images, voice and other files I can't read."
        )
    )
    assert chat.texts[3].startswith("Your message is empty")
    assert stored == []


async def test_bot_token_never_appears_in_logs(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "hello")
        await _answered(bot, USER)
        token = bot.tg.token
    messages = [record.getMessage() for record in caplog.records]
    # httpx did log the request URLs (so this test can fail), with the token blanked out.
    assert any(
        REDACTED in m for m, r in zip(messages, caplog.records, strict=True) if r.name == "httpx"
    )
    assert not [m for m in messages if token in m]
    assert token not in caplog.text
    assert token.split(":")[1] not in caplog.text


async def test_queue_position_while_the_engine_is_full(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.01
    users = [USER + n for n in range(5)]  # the engine has 4 slots: one request waits
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        for user in users:
            bot.tg.push_text(user, "hello")
        for user in users:
            await bot.tg.wait_for(lambda user=user: final_texts(bot.tg, user))
        await bot.wait_idle()
    drafts = [d.text for user in users for d in bot.tg.chat(user).drafts]
    assert any("⏳ In queue: position 1 ▌" in text for text in drafts)
    assert all(
        final_texts(bot.tg, user) == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"] for user in users
    )
    for user in users:
        assert "typing" in [a.action for a in bot.tg.chat(user).actions]
        assert_paced(bot.paced_calls(user), interval=0.2)


@pytest.mark.parametrize(("mode", "tag"), [("hidden", None), ("full", "<blockquote>")])
async def test_reasoning_modes(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, mode: str, tag: str | None
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path, chat={"reasoning": mode}) as bot:
        bot.tg.push_text(USER, "hello")
        texts = await _answered(bot, USER)
    message = bot.tg.chat(USER).last_bot_message
    assert message is not None and message.raw is not None
    if tag is None:
        assert texts == [ANSWER_SHOWN]
        assert "blockquote" not in message.raw
    else:
        assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
        assert message.raw.startswith(tag)


async def test_a_user_who_blocked_the_bot_stops_the_model_with_a_warning(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.throttle.delay = 0.05  # the whole script would take 3 s
    blocked = "Forbidden: bot was blocked by the user"
    with caplog.at_level(logging.WARNING):
        async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
            for method in ("sendMessage", "sendMessageDraft"):
                bot.tg.inject_error(method, 403, description=blocked, chat_id=USER, times=100)
            bot.tg.push_text(USER, "Are you there?")
            await bot.tg.wait_for(lambda: bot.tg.calls_of("sendMessageDraft", chat_id=USER))
            await bot.wait_idle()
            stored = await bot.stored_once_ended(USER, USER)
    # No one can see the answer: the model was stopped early; what it wrote is kept.
    assert stored[-1].status == "stopped"
    assert stored[-1].num_generated_tokens < scripted.num_tokens
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING for r in refusals)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a blocked user"
