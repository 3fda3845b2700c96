"""Telegram allowlists (users and chats) and /reload changing them while the bot answers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from bot.chat.commands import ADMINS_ONLY_RELOAD, NOT_ALLOWED
from tests.fakes.telegram_api import FakeTelegram
from tests.frontends.telegram_harness import (
    ADMIN,
    ANSWER,
    ANSWER_SHOWN,
    Bot,
    Scripted,
    assert_paced,
    build_scripted,
    final_texts,
    running_bot,
    write_settings,
)
from tests.support.configs import REPO, bot_command, bot_env, tiny_model_config
from tests.support.models import build_scripted_model, save_model_folder

GROUP = -1001234567890
OTHER_GROUP = -1009876543210
ALICE = 501
BOB = 502


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=20, answer=ANSWER)


def _full(scripted: Scripted) -> str:
    return f"{scripted.reasoning}\n{ANSWER_SHOWN}"


async def _texts(bot: Bot, chat_id: int, count: int) -> list[str]:
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, chat_id)) >= count)
    return final_texts(bot.tg, chat_id)


async def test_allowed_chats_answer_there_and_nowhere_else(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    # ALICE's private chat is listed (its id is hers); BOB's is not.
    allowed = {"allowed_chats": (GROUP, ALICE), "group_edits_per_minute": 1000}
    async with running_bot(scripted.model, tokenizer, tmp_path, telegram=allowed) as bot:
        tg = bot.tg
        tg.add_chat(GROUP)
        tg.add_chat(OTHER_GROUP)
        # Outside the allowlist, a group gets nothing at all: no answer, no refusal, no notice.
        tg.push_text(OTHER_GROUP, "hello?", mention=True, user_id=BOB)
        tg.push_command(OTHER_GROUP, "ask", "anyone?", user_id=BOB)
        tg.push_command(OTHER_GROUP, "help", user_id=BOB, with_username=True)
        tg.push_text(GROUP, "what do you think?", mention=True, user_id=BOB)
        tg.push_text(BOB, "hello")  # a private chat: one clear line
        tg.push_text(ALICE, "hello")
        tg.push_text(ADMIN, "hello")  # admins are always answered
        in_group = await _texts(bot, GROUP, 1)
        to_bob = await _texts(bot, BOB, 1)
        to_alice = await _texts(bot, ALICE, 1)
        to_admin = await _texts(bot, ADMIN, 1)
        await bot.wait_idle()
        stored_other = await bot.stored(OTHER_GROUP, BOB)
        stored_bob = await bot.stored(BOB, BOB)
    assert in_group == to_alice == to_admin == [_full(scripted)]
    assert to_bob == [NOT_ALLOWED]
    assert tg.chat(OTHER_GROUP).bot_messages == []
    assert stored_other == stored_bob == []


async def test_reload_changes_the_allowlist_while_an_answer_runs(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    users = {"allowed_users": (ALICE, BOB)}
    async with running_bot(
        scripted.model, tokenizer, tmp_path, telegram=users, config_file=config
    ) as bot:
        tg = bot.tg
        scripted.throttle.gate.clear()  # BOB's answer starts and then waits for the model
        try:
            tg.push_text(BOB, "first question")
            await tg.wait_for(lambda: bot.frontend.num_answering == 1)

            tg.push_command(BOB, "reload")  # not an admin
            [refused] = await _texts(bot, BOB, 1)
            # BOB is taken off the list; the answer length limit changes too.
            write_settings(
                config,
                bot.settings,
                telegram={"allowed_users": [ALICE], "edit_interval": 0.6},
                chat={"max_message_chars": 10},
                model={"path": "another/model"},
            )
            tg.push_command(ADMIN, "reload")
            [reloaded] = await _texts(bot, ADMIN, 1)
            assert bot.frontend.num_answering == 1  # still waiting for the model
        finally:
            scripted.throttle.gate.set()
        await tg.wait_for(lambda: _full(scripted) in final_texts(tg, BOB))
        tg.push_text(BOB, "second question")
        tg.push_text(ALICE, "a long question, past the new limit")
        to_bob = await _texts(bot, BOB, 3)
        [too_long] = await _texts(bot, ALICE, 1)
        # The new edit interval paces the answers started from now on.
        scripted.throttle.delay = 0.05  # an answer of a few seconds: several edits
        before = len(bot.paced_calls(ALICE))
        tg.push_text(ALICE, "short one")
        await _texts(bot, ALICE, 2)
        await bot.wait_idle()
        alice_calls = bot.paced_calls(ALICE)[before:]
        stored_bob = await bot.stored(BOB, BOB)
    assert refused == ADMINS_ONLY_RELOAD
    assert reloaded == (
        "Config reloaded: chat.max_message_chars, telegram.allowed_users, "
        "telegram.edit_interval\n"
        "needs a restart: model.path"
    )
    # (In a private chat the answer may land as a message only when done: order aside.)
    assert sorted(to_bob) == sorted([ADMINS_ONLY_RELOAD, _full(scripted), NOT_ALLOWED])
    assert too_long.startswith("Your message is too long")
    assert_paced(alice_calls, interval=0.6)
    # The running answer completed and was stored; the refused message was not.
    assert [(m.role, m.content) for m in stored_bob] == [
        ("user", "first question"),
        ("assistant", scripted.answer),
    ]


async def test_a_bad_config_on_reload_keeps_the_old_settings(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    users = {"allowed_users": (ALICE,)}
    async with running_bot(
        scripted.model, tokenizer, tmp_path, telegram=users, config_file=config
    ) as bot:
        write_settings(config, bot.settings, telegram={"allowed_users": ["bob"]})
        tg = bot.tg
        tg.push_command(ADMIN, "reload")
        [reply] = await _texts(bot, ADMIN, 1)
        tg.push_text(BOB, "hello")
        to_bob = await _texts(bot, BOB, 1)
    assert reply.startswith("Config not reloaded (the old settings stay): ")
    assert "telegram.allowed_users[0] must be an integer" in reply
    assert to_bob == [NOT_ALLOWED]


@pytest.mark.slow
async def test_sighup_reloads_a_running_bot_and_an_open_bot_is_warned_about(
    tokenizer: Any, tmp_path: Path
) -> None:
    """`python -m bot run` as a subprocess, against the fake Bot API in this process."""
    folder = save_model_folder(
        build_scripted_model(tokenizer, f"Let me think</think>\n\n{ANSWER}"),
        tokenizer,
        tmp_path / "m",
    )
    async with FakeTelegram() as tg:
        telegram = {"enabled": True, "token": tg.token, "base_url": tg.base_url, "admins": [ADMIN]}
        config = tmp_path / "config.toml"
        tiny_model_config(config, folder, tmp_path / "bot.db", telegram=telegram)
        child = await asyncio.create_subprocess_exec(
            *bot_command("run", "--config", str(config)),
            cwd=REPO,
            env=bot_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        log: list[str] = []

        async def read_log() -> None:
            assert child.stderr is not None
            async for line in child.stderr:
                log.append(line.decode(errors="replace").rstrip())

        reader = asyncio.create_task(read_log())

        async def logged(text: str) -> str:
            async with asyncio.timeout(120):  # a start loads torch and the model
                while not any(text in line for line in log):
                    if reader.done():
                        raise AssertionError("the bot exited:\n" + "\n".join(log))
                    await asyncio.sleep(0.05)
            return next(line for line in log if text in line)

        try:
            warning = await logged("no allowlist is set")
            await logged("serving on telegram")
            tg.push_text(BOB, "hello")
            await tg.wait_for(lambda: final_texts(tg, BOB), timeout=120)

            tiny_model_config(
                config,
                folder,
                tmp_path / "bot.db",
                telegram={**telegram, "allowed_users": [ALICE]},
                model={"max_context_tokens": 2048},
            )
            child.send_signal(signal.SIGHUP)
            reloaded = await logged("Config reloaded")
            tg.push_text(BOB, "hello again")
            await tg.wait_for(lambda: len(final_texts(tg, BOB)) == 2, timeout=60)
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await child.wait()
                await reader
    assert "WARNING" in warning and "telegram: the bot answers everyone" in warning
    assert reloaded.endswith(
        "Config reloaded: telegram.allowed_users; needs a restart: model.max_context_tokens"
    )
    assert final_texts(tg, BOB) == [f"Let me think\n{ANSWER_SHOWN}", NOT_ALLOWED]
    assert child.returncode == 0, "\n".join(log)
