"""Webhook mode end to end: the real front-end's listener, fed the way Telegram feeds it.

The fake Bot API records setWebhook and POSTs updates to the bot's listener on 127.0.0.1 with
the X-Telegram-Bot-Api-Secret-Token header; the rest (ChatService, SQLite, the scripted model)
is wired as `python -m bot run` wires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.frontends.redact import REDACTED
from bot.frontends.telegram_ui.frontend import ALLOWED_UPDATES
from bot.frontends.telegram_ui.replies import CLOSING_TEXT
from tests.frontends.telegram_harness import (
    ANSWER,
    ANSWER_SHOWN,
    Bot,
    Scripted,
    build_scripted,
    final_texts,
    running_bot,
)

USER = 42
SECRET = "hook_Secret-0123456789abcdef"
HOOK_PATH = "/telegram/hook"
CLOSE_LIMIT_S = 5.0  # stopping must not wait for the model or a connection


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    """40 words of reasoning, then a short Markdown answer."""
    return build_scripted(tokenizer, num_reasoning_words=40, answer=ANSWER)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def webhook_bot(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, secret: str = SECRET
) -> AsyncIterator[Bot]:
    """The whole bot in webhook mode, listening on a free port of 127.0.0.1."""
    port = _free_port()
    telegram = {
        "mode": "webhook",
        "webhook_listen": "127.0.0.1",
        "webhook_port": port,
        "webhook_url": f"http://127.0.0.1:{port}{HOOK_PATH}",
        "webhook_secret": secret,
    }
    async with running_bot(scripted.model, tokenizer, tmp_path, telegram=telegram) as bot:
        yield bot


async def _accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _answered(bot: Bot, chat_id: int) -> list[str]:
    """Wait until an answer is complete in the chat; returns what the chat shows."""
    await bot.tg.wait_for(lambda: final_texts(bot.tg, chat_id))
    await bot.wait_idle()
    return bot.tg.chat(chat_id).texts


async def _timed_close(bot: Bot) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(bot.close(), CLOSE_LIMIT_S * 2)
    return loop.time() - started


async def test_start_registers_the_webhook_with_its_secret(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        hook = bot.settings.telegram
        is_listening = await _accepts_connections(hook.webhook_port)
    (call,) = bot.tg.calls_of("setWebhook")
    assert call.is_ok
    assert call.params["url"] == hook.webhook_url
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == ALLOWED_UPDATES
    assert bot.tg.webhook is not None
    assert (bot.tg.webhook.url, bot.tg.webhook.secret_token) == (hook.webhook_url, SECRET)
    assert is_listening
    assert bot.tg.commands  # the command menu is registered as in polling mode


async def test_an_update_posted_to_the_webhook_is_answered(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        delivery = await bot.tg.push_webhook_update(USER, "What is the answer?")
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert (delivery.status, delivery.secret_token) == (200, SECRET)
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "What is the answer?", "complete"),
        ("assistant", scripted.answer, "complete"),
    ]
    # The update came only through the webhook: the bot never polled, nothing waits at Telegram.
    assert bot.tg.calls_of("getUpdates") == []
    assert bot.tg.pending_updates == []


async def test_without_a_configured_secret_a_random_one_guards_the_webhook(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with webhook_bot(scripted, tokenizer, tmp_path, secret="") as bot:
        forged = await bot.tg.push_webhook_update(USER, "Forged question", secret_token=None)
        genuine = await bot.tg.push_webhook_update(USER, "What is the answer?")  # Telegram's
        texts = await _answered(bot, USER)
    assert bot.tg.webhook is not None
    registered = bot.tg.webhook.secret_token
    assert registered and len(registered) >= 32
    assert forged.status == 403
    assert (genuine.status, genuine.secret_token) == (200, registered)
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]


@pytest.mark.parametrize(
    "secret",
    ["not-the-secret", SECRET[:-1], "", None],
    ids=["wrong", "truncated", "empty", "missing"],
)
async def test_a_post_without_the_secret_is_refused(
    secret: str | None, scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        forged = await bot.tg.push_webhook_update(USER, "Forged question", secret_token=secret)
        # A genuine question right after: had the forged one got in, it would be answered first
        # and this one refused as a second message while answering.
        genuine = await bot.tg.push_webhook_update(USER, "What is the answer?")
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert forged.status == 403
    assert genuine.status == 200
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]
    assert [m.content for m in stored if m.role == "user"] == ["What is the answer?"]
    forged_id = forged.update["message"]["message_id"]
    bot_messages = [m for m in bot.tg.chat(USER).messages.values() if m.is_from_bot]
    assert forged_id not in {m.reply_to_message_id for m in bot_messages}


async def test_stopping_closes_the_listener_and_lands_the_answer(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.05
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        port = bot.settings.telegram.webhook_port
        delivery = await bot.tg.push_webhook_update(USER, "Take your time")
        chat = bot.tg.chat(USER)
        await bot.tg.wait_for(lambda: any(len(d.text) > 60 for d in chat.drafts))
        took = await _timed_close(bot)
        is_listening = await _accepts_connections(port)
        late = await bot.tg.push_webhook_update(USER, "Are you still there?")
        stored = await bot.stored(USER, USER)
    assert delivery.is_ok
    assert took < CLOSE_LIMIT_S
    assert not is_listening
    assert (late.status, late.error) == (None, "Connection refused")
    # The answer in progress landed with a note; the late message waits at Telegram.
    (text,) = chat.texts
    assert "Interrupted" in text and "restarting" in text
    assert [(m.content, m.status) for m in stored] == [
        ("Take your time", "complete"),
        (stored[1].content, "interrupted"),
    ]
    assert [u["message"]["text"] for u in bot.tg.pending_updates] == ["Are you still there?"]


async def test_a_message_taken_just_before_stopping_is_not_lost(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    scripted.throttle.delay = 0.05
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        delivery = await bot.tg.push_webhook_update(USER, "Quick question")
        took = await _timed_close(bot)
    assert delivery.is_ok  # Telegram will not send it again: the bot must answer it somehow
    assert took < CLOSE_LIMIT_S
    (text,) = final_texts(bot.tg, USER)
    # Either its answer, cut short with a note, or "I'm restarting, send it again".
    assert text == CLOSING_TEXT or ("Interrupted" in text and "restarting" in text)


async def test_the_webhook_secret_never_appears_in_logs(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with webhook_bot(scripted, tokenizer, tmp_path) as bot:
        await bot.tg.push_webhook_update(USER, "Forged question", secret_token="not-the-secret")
        await bot.tg.push_webhook_update(USER, "What is the answer?")
        await _answered(bot, USER)
    # PTB logged the setWebhook call with its parameters, with the secret blanked out.
    assert any(
        "setWebhook" in r.getMessage() and REDACTED in r.getMessage() for r in caplog.records
    )
    assert SECRET not in caplog.text
