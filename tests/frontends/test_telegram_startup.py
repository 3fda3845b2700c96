"""Starting the Telegram front-end: clear errors for a bad token, no API, no webhook extra."""

from __future__ import annotations

import importlib.util
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from bot.config import ChatSettings, ConfigError, TelegramSettings
from bot.frontends.telegram_ui.frontend import TelegramFrontend, file_url_for
from tests.fakes.telegram_api import FakeTelegram

OTHER_TOKEN = "987654321:" + "B" * 35


def _frontend(**settings: Any) -> TelegramFrontend:
    # The service is not reached before an update arrives.
    service: Any = None
    telegram = TelegramSettings(enabled=True, **settings)
    return TelegramFrontend(telegram, service, chat=ChatSettings())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_refused_token_is_a_config_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeTelegram() as tg:
        frontend = _frontend(token=OTHER_TOKEN, base_url=tg.base_url)
        with pytest.raises(ConfigError, match="refused the bot token"):
            await frontend.start()
        assert [c.status for c in tg.calls_of("getMe")] == [401]
    assert OTHER_TOKEN not in caplog.text


async def test_an_unreachable_api_is_a_config_error() -> None:
    frontend = _frontend(token=OTHER_TOKEN, base_url=f"http://127.0.0.1:{_free_port()}/bot")
    with pytest.raises(ConfigError, match=r"cannot reach the Bot API at 127\.0\.0\.1"):
        await frontend.start()


@pytest.mark.skipif(
    importlib.util.find_spec("tornado") is not None, reason="the webhooks extra is installed"
)
async def test_webhook_mode_without_the_extra_is_a_config_error(tmp_path: Path) -> None:
    async with FakeTelegram() as tg:
        frontend = _frontend(
            token=tg.token,
            base_url=tg.base_url,
            mode="webhook",
            webhook_url="https://bot.example.org/telegram/hook",
            webhook_port=_free_port(),
        )
        with pytest.raises(ConfigError, match=r"python-telegram-bot\[webhooks\]"):
            await frontend.start()
        assert not frontend.application.running


def test_file_url_follows_the_api_url() -> None:
    assert file_url_for("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_url_for("http://localhost:8081/bot") == "http://localhost:8081/file/bot"


async def test_a_taken_webhook_port_is_a_config_error_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeTelegram() as tg:
            frontend = _frontend(
                token=tg.token,
                base_url=tg.base_url,
                mode="webhook",
                webhook_url=f"http://127.0.0.1:{port}/hook",
                webhook_listen="127.0.0.1",
                webhook_port=port,
            )
            with pytest.raises(
                ConfigError, match=rf"telegram\.webhook_port: .*127\.0\.0\.1:{port}"
            ):
                await frontend.start()
            assert not frontend.application.running
