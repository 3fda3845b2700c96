"""Commands end to end: the menu, /start /help /reset /system /ask, admins, allowed users."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.chat.commands import ASK_USAGE, NOT_ALLOWED, TELEGRAM, UNKNOWN_COMMAND
from bot.types import ChatKey
from tests.frontends.telegram_harness import (
    ADMIN,
    ANSWER,
    ANSWER_SHOWN,
    Bot,
    Scripted,
    build_scripted,
    final_texts,
    running_bot,
)

GROUP = -1001234567890
ALICE = 501
BOB = 502


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=10, answer=ANSWER)


async def _replies(bot: Bot, chat_id: int, count: int) -> list[str]:
    """Wait for `count` finished bot messages in the chat."""
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, chat_id)) >= count)
    await bot.wait_idle()
    return final_texts(bot.tg, chat_id)


def _key(chat_id: int, user_id: int) -> ChatKey:
    return ChatKey("telegram", str(chat_id), str(user_id))


async def test_menu_start_help_and_unknown_commands(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        tg = bot.tg
        for command in ("start", "help", "frobnicate", "ask"):
            tg.push_command(ALICE, command)
            await _replies(bot, ALICE, 1 + ["start", "help", "frobnicate", "ask"].index(command))
        commands = dict(tg.commands)
    assert final_texts(tg, ALICE) == [
        TELEGRAM.start_text(),
        TELEGRAM.help_text(),
        UNKNOWN_COMMAND,
        ASK_USAGE,
    ]
    private = commands['{"type": "default"}', ""]
    groups = commands['{"type": "all_group_chats"}', ""]
    assert {c["command"] for c in private} == {"start", "help", "reset", "system", "stop", "id"}
    assert {c["command"] for c in groups} == {
        *("start", "help", "reset", "system", "stop", "id", "ask")
    }


async def test_reset_own_dialogue(scripted: Scripted, tokenizer: Any, tmp_path: Path) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(ALICE, "remember this")
        await _replies(bot, ALICE, 1)
        before = await bot.app.store.history(_key(ALICE, ALICE))
        bot.tg.push_command(ALICE, "reset")
        texts = await _replies(bot, ALICE, 2)
        after = await bot.app.store.history(_key(ALICE, ALICE))
        kept = await bot.stored(ALICE, ALICE)
    assert texts[1].startswith("🧹 New conversation")
    assert [m.role for m in before] == ["user", "assistant"]
    assert after == []
    assert len(kept) == 2  # the old dialogue stays stored


async def test_only_admins_reset_other_dialogues(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.frontends.telegram_ui.commands")
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        tg = bot.tg
        tg.add_chat(GROUP)
        tg.push_command(GROUP, "ask", "one", user_id=ALICE)
        tg.push_command(GROUP, "ask", "two", user_id=BOB)
        await _replies(bot, GROUP, 2)
        tg.push_command(GROUP, "reset", str(ALICE), user_id=BOB)
        await _replies(bot, GROUP, 3)
        alice_kept = await bot.app.store.history(_key(GROUP, ALICE))
        tg.push_command(GROUP, "reset", str(ALICE), user_id=ADMIN)
        await _replies(bot, GROUP, 4)
        alice_reset = await bot.app.store.history(_key(GROUP, ALICE))
        bob_kept = await bot.app.store.history(_key(GROUP, BOB))
        tg.push_command(GROUP, "reset", "all", user_id=ADMIN)
        texts = await _replies(bot, GROUP, 5)
        bob_reset = await bot.app.store.history(_key(GROUP, BOB))
    assert texts[2:] == [
        TELEGRAM.admins_only("reset"),
        f"🧹 Reset the conversation of user {ALICE}.",
        "🧹 New conversations for everyone here (1 reset).",
    ]
    assert len(alice_kept) == 2 and alice_reset == []
    assert len(bob_kept) == 2 and bob_reset == []
    # Every admin action is audited; the refused attempt is not an admin action.
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit:")] == [
        f"audit: admin {ADMIN} ran /reset {ALICE} in chat {GROUP}",
        f"audit: admin {ADMIN} ran /reset all in chat {GROUP}",
    ]


async def test_system_prompt_is_for_admins(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"system_prompt": "Be helpful."}
    ) as bot:
        tg = bot.tg
        tg.add_chat(GROUP)
        service = bot.app.service
        steps = [
            (BOB, "Be rude."),
            (BOB, ""),
            (ADMIN, "Answer in haiku."),
            (ADMIN, ""),
            (ADMIN, "clear"),
            (ADMIN, ""),
        ]
        prompts = []
        for number, (user, args) in enumerate(steps, start=1):
            tg.push_command(GROUP, "system", args, user_id=user)
            await _replies(bot, GROUP, number)
            prompts.append((await service.system_prompt("telegram", str(GROUP))).text)
        texts = final_texts(tg, GROUP)
    assert texts == [
        TELEGRAM.admins_only("system"),
        TELEGRAM.admins_only("system"),
        "System prompt set for this chat. /reset to start afresh with it.",
        "System prompt (set for this chat):\n\nAnswer in haiku.",
        "System prompt restored to the default.",
        "System prompt (the default):\n\nBe helpful.",
    ]
    assert prompts == [
        "Be helpful.",
        "Be helpful.",
        "Answer in haiku.",
        "Answer in haiku.",
        "Be helpful.",
        "Be helpful.",
    ]


async def test_allowed_users_and_admins(scripted: Scripted, tokenizer: Any, tmp_path: Path) -> None:
    async with running_bot(
        scripted.model, tokenizer, tmp_path, telegram={"allowed_users": (ALICE,)}
    ) as bot:
        tg = bot.tg
        for user in (ALICE, BOB, ADMIN):
            tg.push_text(user, "hello")
        tg.push_command(BOB, "reset")
        await _replies(bot, ALICE, 1)
        await _replies(bot, ADMIN, 1)
        bob = await _replies(bot, BOB, 2)
        stored_bob = await bot.stored(BOB, BOB)
    expected = f"{scripted.reasoning}\n{ANSWER_SHOWN}"
    assert final_texts(tg, ALICE) == final_texts(tg, ADMIN) == [expected]
    assert bob == [NOT_ALLOWED, NOT_ALLOWED]
    assert stored_bob == []
