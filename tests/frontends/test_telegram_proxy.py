"""`[telegram] proxy`: every Bot API call goes through it, and a bad one fails start-up clearly."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bot.config import ChatSettings, ConfigError, TelegramSettings
from bot.frontends.telegram_ui.frontend import TelegramFrontend
from tests.fakes.http_proxy import HttpProxy
from tests.fakes.telegram_api import FakeTelegram
from tests.frontends.telegram_harness import (
    ANSWER,
    ANSWER_SHOWN,
    Scripted,
    build_scripted,
    final_texts,
    running_bot,
)

USER = 42
PROXY_USER = "bot"
PASSWORD = "pr0xy-Passw0rd-7q"  # distinctive: a hit in the logs is no coincidence


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=40, answer=ANSWER)


def _frontend(tg: FakeTelegram, proxy: str) -> TelegramFrontend:
    service: Any = None  # not reached: start-up fails before any update
    settings = TelegramSettings(enabled=True, token=tg.token, base_url=tg.base_url, proxy=proxy)
    return TelegramFrontend(settings, service, chat=ChatSettings())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _method(path: str | None) -> str:
    """'/bot<token>/sendMessage?x=1' -> 'sendmessage' (PTB's spelling need not be canonical)."""
    return (path or "").partition("?")[0].rsplit("/", 1)[-1].lower()


async def test_every_bot_api_call_goes_through_the_proxy(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scripted.throttle.delay = 0.02  # slow enough for drafts to stream
    async with HttpProxy(auth=(PROXY_USER, PASSWORD)) as proxy:
        proxy_url = proxy.url_with(PROXY_USER, PASSWORD)
        async with running_bot(
            scripted.model, tokenizer, tmp_path, telegram={"proxy": proxy_url}
        ) as bot:
            bot.tg.push_text(USER, "What is the answer?")
            await bot.tg.wait_for(lambda: final_texts(bot.tg, USER))
            await bot.wait_idle()
            texts = bot.tg.chat(USER).texts
    assert texts == [f"{scripted.reasoning}\n{ANSWER_SHOWN}"]

    by_server = Counter(call.method.lower() for call in bot.tg.calls)
    via_proxy = Counter(_method(record.path) for record in proxy.records)
    # Start-up, the long polls, the streamed answer and shutdown all reached the fake ...
    assert {"getme", "setmycommands", "getupdates", "sendmessagedraft", "sendmessage"} <= set(
        by_server
    )
    assert by_server["getupdates"] >= 2
    # ... and not one of those calls went around the proxy.
    assert by_server - via_proxy == Counter(), "calls that bypassed the proxy"
    assert {r.target for r in proxy.records} == {f"127.0.0.1:{bot.tg.port}"}
    assert {r.method for r in proxy.records} <= {"GET", "POST"}  # absolute form, no CONNECT
    # The credentials of the URL went with every request, and the proxy refused none.
    assert {r.credentials for r in proxy.records} == {f"{PROXY_USER}:{PASSWORD}"}
    assert 407 not in {r.status for r in proxy.records}
    assert PASSWORD not in caplog.text


async def test_an_unreachable_proxy_fails_start_up_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeTelegram() as tg:
        frontend = _frontend(tg, f"http://{PROXY_USER}:{PASSWORD}@127.0.0.1:{_free_port()}")
        with pytest.raises(ConfigError) as failed:
            await frontend.start()
        assert tg.calls == []  # nothing tried the Bot API directly
    message = str(failed.value)
    assert message.startswith(f"[telegram] cannot reach the Bot API at 127.0.0.1:{tg.port} (")
    assert message.endswith("; check base_url and proxy") and "\n" not in message
    # Raised `from None`: the command line prints this one line, no chained traceback.
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert PASSWORD not in message and PASSWORD not in caplog.text


async def test_refused_proxy_credentials_fail_start_up_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HttpProxy(auth=(PROXY_USER, PASSWORD)) as proxy, FakeTelegram() as tg:
        frontend = _frontend(tg, proxy.url_with(PROXY_USER, "not-" + PASSWORD))
        with pytest.raises(ConfigError, match=r"cannot reach the Bot API .*407") as failed:
            await frontend.start()
        assert tg.calls == []
    assert [(r.credentials, r.status) for r in proxy.records][:1] == [
        (f"{PROXY_USER}:not-{PASSWORD}", 407)
    ]
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert PASSWORD not in str(failed.value) and PASSWORD not in caplog.text
