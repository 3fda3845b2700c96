"""The bot token never reaches the logs, and a bad token fails start-up with a clear error."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.config import ChatSettings, DiscordSettings
from bot.frontends.discord_ui.connect import GatewayLookupFailed
from bot.frontends.discord_ui.frontend import DiscordFrontend
from tests.fakes.discord_api import FakeDiscord
from tests.frontends.discord_harness import is_done, running_bot
from tests.support.models import build_scripted_model

TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"


async def test_token_is_absent_from_debug_logs_over_a_full_turn(
    tokenizer, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model = build_scripted_model(tokenizer, "Hm. </think>\n\nHello there")
    async with running_bot(model, tokenizer, tmp_path, fake_options={"token": TOKEN}) as bot:
        dc = bot.dc
        rec = await dc.slash(bot.alice, "chat", prompt="hi", guild=bot.guild)
        dm = await dc.inject_message(bot.bob, "hello")
        await dc.wait_for(lambda: is_done(rec.original) and bot.bot_messages(dm.channel))
        await bot.wait_idle()
        click_free = await dc.slash(bot.alice, "stop", guild=bot.guild)
        await dc.wait_for(lambda: click_free.original)

    # The capture saw discord.py's own debug output (REST calls, gateway events) ...
    names = {r.name for r in caplog.records if r.levelno == logging.DEBUG}
    assert {"discord.http", "discord.gateway"} <= names
    # ... and nothing anywhere contains the token, nor its secret last part.
    secret = TOKEN.rsplit(".", 1)[1]
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + repr(record.args)
        assert TOKEN not in text and secret not in text, record.name


async def test_a_rejected_token_fails_start_up_without_showing_it() -> None:
    async with FakeDiscord(token=TOKEN) as dc:
        settings = DiscordSettings(
            enabled=True, token="wrong-" + TOKEN, api_base=dc.api_base, edit_interval=0.2
        )
        service: Any = None  # never reached: start-up fails first
        frontend = DiscordFrontend(settings, service, chat=ChatSettings())
        with pytest.raises(GatewayLookupFailed) as failed:
            await frontend.start()
        assert "401" in str(failed.value) and TOKEN not in str(failed.value)
        await frontend.close()
