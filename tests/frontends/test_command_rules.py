"""One rule per command on every front-end: /system is for the bot's admins, wherever it is used.

Telegram groups and private chats, Discord servers and DMs: a member who may chat is refused
/system (showing it too) with the same sentence, and nothing changes; an admin is answered. The
menus and slash command descriptions are the ones bot.chat.commands words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.chat.commands import BY_NAME, DISCORD, TELEGRAM, commands_for
from tests.frontends import discord_harness, telegram_harness
from tests.frontends.telegram_harness import ADMIN, ANSWER, build_scripted, final_texts
from tests.support.models import build_scripted_model

GROUP = -1001234567890
BOB = 502
DEFAULT = "Be helpful."


@pytest.fixture(scope="module")
def telegram_model(tokenizer: Any) -> Any:
    return build_scripted(tokenizer, num_reasoning_words=10, answer=ANSWER).model


async def test_telegram_system_is_for_admins_in_groups_and_private_chats(
    telegram_model: Any, tokenizer: Any, tmp_path: Path
) -> None:
    async with telegram_harness.running_bot(
        telegram_model, tokenizer, tmp_path, chat={"system_prompt": DEFAULT}
    ) as bot:
        tg, service = bot.tg, bot.app.service
        tg.add_chat(GROUP)
        for chat_id in (GROUP, BOB):  # BOB's private chat has his id
            tg.push_command(chat_id, "system", "Be rude.", user_id=BOB)
            tg.push_command(chat_id, "system", user_id=BOB)
        tg.push_command(ADMIN, "system", "Be brief.", user_id=ADMIN)
        await tg.wait_for(
            lambda: [len(final_texts(tg, c)) for c in (GROUP, BOB, ADMIN)] == [2, 2, 1]
        )
        prompts = [(await service.system_prompt("telegram", str(c))).text for c in (GROUP, BOB)]
        admins = (await service.system_prompt("telegram", str(ADMIN))).text
        menu = dict(tg.commands)['{"type": "all_group_chats"}', ""]
    refused = TELEGRAM.admins_only("system")
    assert refused == "Only the bot's admins can view or change the system prompt."
    assert final_texts(tg, GROUP) == final_texts(tg, BOB) == [refused, refused]
    assert prompts == [DEFAULT, DEFAULT]
    assert final_texts(tg, ADMIN) == [TELEGRAM.system_set()] and admins == "Be brief."
    # The menu everyone sees says who may use /system, and leaves out the bot-wide commands.
    described = {c["command"]: c["description"] for c in menu}
    assert described["system"] == "Show or set this chat's system prompt (admins)"
    assert described == {
        c.name: c.describe("telegram") for c in commands_for("telegram") if c.in_menu
    }


@pytest.fixture
def discord_model(tokenizer: Any) -> Any:
    return build_scripted_model(tokenizer, "Let me think about it. </think>\n\nHello there!")


async def test_discord_system_is_for_admins_in_servers_and_dms(
    discord_model: Any, tokenizer: Any, tmp_path: Path
) -> None:
    async with discord_harness.running_bot(
        discord_model, tokenizer, tmp_path, chat={"system_prompt": DEFAULT}
    ) as bot:
        dc, guild, service = bot.dc, bot.guild, bot.app.service

        async def answer(user: Any, where: Any, **text: str) -> str:
            rec = await dc.slash(user, "system", guild=where, **text)
            await dc.wait_for(lambda: rec.original and rec.original.content)
            assert rec.original.is_ephemeral
            return rec.original.content

        # A DM used to let anyone set (and anyone see) its own prompt: not any more.
        refused = [
            await answer(bot.alice, guild, text="Be rude."),
            await answer(bot.alice, guild),
            await answer(bot.alice, None, text="Be rude."),
            await answer(bot.alice, None),
            # Manage Server makes mona an admin of her server's channels, not of her DMs.
            await answer(bot.mona, None, text="Be rude."),
        ]
        dm_channel = dc.dm_channel(bot.alice)
        unchanged = [
            (await service.system_prompt("discord", str(channel.id))).text
            for channel in (guild.default_channel, dm_channel)
        ]
        set_by_root = await answer(bot.root, None, text="Be brief.")
        root_dm = dc.dm_channel(bot.root)
        set_prompt = (await service.system_prompt("discord", str(root_dm.id))).text
        described = {c["name"]: c["description"] for c in dc.commands}
    assert refused == [DISCORD.admins_only("system")] * 5
    assert unchanged == [DEFAULT, DEFAULT]
    assert set_by_root == DISCORD.system_set() and set_prompt == "Be brief."
    assert described == {c.name: c.describe("discord") for c in commands_for("discord")}
    assert described["system"] == BY_NAME["system"].describe("telegram")  # the same rule
