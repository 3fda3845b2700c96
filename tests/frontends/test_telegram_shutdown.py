"""`python -m bot run` against the fake Bot API, stopped with SIGTERM in the middle of an answer."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from bot.store.sqlite import SqliteStore
from tests.fakes.telegram_api import FakeTelegram
from tests.support.configs import REPO, bot_command, bot_env, tiny_model_config
from tests.support.looping import build_looping_model
from tests.support.models import save_model_folder

pytestmark = pytest.mark.slow

USER = 42
LOOP_REASONING = "Thinking briefly."
LOOP_ANSWER = "On" + " and on" * 10_000
NOTE = "Interrupted: the bot is restarting"
WAIT = 60.0  # seconds before the test gives up (a start loads torch and a model): no speed check


@pytest.fixture(scope="module")
def endless_folder(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model whose answer never ends."""
    model = build_looping_model(tokenizer, f"{LOOP_REASONING}</think>\n\nOn", " and on")
    return save_model_folder(model, tokenizer, tmp_path_factory.mktemp("endless"))


async def stored(db: Path) -> list[Any]:
    async with SqliteStore.open(db) as store:
        return await store.query_messages()


def endless_config(tg: FakeTelegram, folder: Path, tmp_path: Path, **sections: Any) -> Path:
    """The endless model answering on the fake Bot API; `sections` add keys."""
    return tiny_model_config(
        tmp_path / "config.toml",
        folder,
        tmp_path / "bot.db",
        generation={"max_new_tokens": 100_000},
        telegram={"enabled": True, "token": tg.token, "base_url": tg.base_url},
        **sections,
    )


async def start_bot(tg: FakeTelegram, config: Path, log: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *bot_command("run", "--config", str(config)),
        cwd=REPO,
        env=bot_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    await tg.wait_for(lambda: tg.calls_of("getUpdates"), timeout=WAIT)  # it is serving
    return process


@pytest.mark.parametrize("platform_hangs", [False, True], ids=["graceful", "platform-hangs"])
async def test_sigterm_mid_answer_lands_the_text_so_far_and_stores_it(
    endless_folder, tmp_path, platform_hangs
):
    db = tmp_path / "bot.db"
    async with FakeTelegram() as tg:
        config = endless_config(tg, endless_folder, tmp_path, chat={"shutdown_grace_seconds": 2.0})
        log = tmp_path / "bot.log"
        process = await start_bot(tg, config, log)
        try:
            tg.push_text(USER, "Tell me a long story.")
            await tg.wait_for(
                lambda: any(" and on and on" in d.text for d in tg.chat(USER).drafts),
                timeout=WAIT,
            )
            if platform_hangs:  # the last message never gets its answer: the grace period ends
                tg.inject_delay("sendMessage", 3600, times=100)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

        shown = tg.chat(USER).texts
    errors = log.read_text(encoding="utf-8")

    assert process.returncode == 0, errors
    question, reply = await stored(db)
    assert question.content == "Tell me a long story."
    assert (reply.role, reply.status, reply.reasoning) == (
        "assistant",
        "interrupted",
        LOOP_REASONING,
    )
    assert reply.content.startswith("On and on") and LOOP_ANSWER.startswith(reply.content)
    if platform_hangs:
        assert "shutdown_grace_seconds" in errors
    else:
        [message] = shown  # the reasoning (collapsed), the answer so far, and the note
        assert reply.content[:50] in message and message.rstrip().endswith(")") and NOTE in message


async def test_after_a_kill_the_chat_is_told_that_its_answer_was_cut(endless_folder, tmp_path):
    db = tmp_path / "bot.db"
    async with FakeTelegram() as tg:
        config = endless_config(tg, endless_folder, tmp_path, storage={"checkpoint_seconds": 0.2})
        process = await start_bot(tg, config, tmp_path / "first.log")
        try:
            tg.push_text(USER, "Tell me a long story.")
            chat = tg.chat(USER)
            # A draft answer: the message with the Stop button is what the user sees stay.
            await tg.wait_for(lambda: any(" and on" in d.text for d in chat.drafts), timeout=WAIT)
            [stop_message] = chat.bot_messages
            async with asyncio.timeout(WAIT):
                while not (reply := (await stored(db))[-1]).location or not reply.content:
                    await asyncio.sleep(0.1)
            process.kill()  # SIGKILL: nothing is landed, nothing is stored on the way out
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert reply.status == "streaming"

        process = await start_bot(tg, config, tmp_path / "second.log")
        try:
            note = await tg.wait_for(
                lambda: "restarted while writing" in (stop_message.text or ""), timeout=WAIT
            )
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                await process.wait()
    assert note
    assert stop_message.reply_markup is None  # no Stop button on a finished answer
    question, cut = await stored(db)
    assert (cut.status, question.content) == ("interrupted", "Tell me a long story.")
    assert cut.content.startswith(reply.content)
