"""`[discord] proxy`: the gateway lookup, the gateway websocket and every REST call use it."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from bot.config import ChatSettings, DiscordSettings
from bot.frontends.discord_ui.connect import GatewayLookupFailed
from bot.frontends.discord_ui.frontend import DiscordFrontend
from tests.fakes.discord_api import GATEWAY_PATH, FakeDiscord
from tests.fakes.http_proxy import HttpProxy
from tests.frontends.discord_harness import (
    CALLBACK,
    EDIT,
    EDIT_ORIGINAL,
    SEND,
    is_done,
    running_bot,
)
from tests.support.models import build_scripted_model

REASONING = "Let me think about it."
ANSWER = "Hello there! This is **the answer**"
FINAL_QUOTED = f"> {REASONING}\n{ANSWER}"
PROXY_USER = "bot"
PASSWORD = "pr0xy-Passw0rd-7q"  # distinctive: a hit in the logs is no coincidence


@pytest.fixture
def model(tokenizer: Any) -> Any:
    return build_scripted_model(tokenizer, f"{REASONING} </think>\n\n{ANSWER}")


async def test_gateway_and_rest_go_through_the_proxy(
    model: Any, tokenizer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HttpProxy(auth=(PROXY_USER, PASSWORD)) as proxy:
        proxy_url = proxy.url_with(PROXY_USER, PASSWORD)
        async with running_bot(model, tokenizer, tmp_path, discord={"proxy": proxy_url}) as bot:
            dc = bot.dc
            dm = await dc.inject_message(bot.alice, "hi in private")  # comes over the gateway
            [reply] = await dc.wait_for(
                lambda: [m for m in bot.bot_messages(dm.channel) if is_done(m)]
            )
            rec = await dc.slash(bot.bob, "chat", prompt="hi", guild=bot.guild)  # a webhook
            await dc.wait_for(lambda: is_done(rec.original))
            await bot.wait_idle()
            num_sessions = len(dc.sessions)
    assert reply.content == FINAL_QUOTED and reply.referenced is dm
    assert rec.original.content == FINAL_QUOTED

    forwarded = [r for r in proxy.records if not r.is_upgrade]
    by_server = Counter((call.method, call.path) for call in dc.calls)
    via_proxy = Counter((r.method, unquote(urlsplit(r.path).path)) for r in forwarded)
    # Login, the gateway lookup, command sync, the interaction callback, the webhook edits
    # and the channel messages all reached the fake ...
    sync = "PUT /applications/{application_id}/commands"
    expected = {"GET /users/@me", "GET /gateway/bot", sync, CALLBACK, EDIT_ORIGINAL, SEND, EDIT}
    assert expected <= {call.route for call in dc.calls}
    # ... and not one of them went around the proxy.
    assert by_server - via_proxy == Counter(), "REST calls that bypassed the proxy"
    # Every gateway session the fake served came through the proxy too: aiohttp asks for a
    # plain ws:// URL in absolute form with Upgrade (Discord's wss:// would use CONNECT).
    upgrades = [r for r in proxy.records if r.is_upgrade]
    assert num_sessions >= 1 and len(upgrades) == num_sessions
    assert {(r.method, urlsplit(r.path).path, r.status) for r in upgrades} == {
        ("GET", GATEWAY_PATH, 101)
    }
    assert {r.target for r in proxy.records} == {f"127.0.0.1:{urlsplit(dc.base_url).port}"}
    # The URL's credentials went with every request, and the proxy refused none.
    assert {r.credentials for r in proxy.records} == {f"{PROXY_USER}:{PASSWORD}"}
    assert 407 not in {r.status for r in proxy.records}
    assert PASSWORD not in caplog.text


async def test_refused_proxy_credentials_fail_start_up_without_showing_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HttpProxy(auth=(PROXY_USER, PASSWORD)) as proxy, FakeDiscord() as dc:
        settings = DiscordSettings(
            enabled=True,
            token=dc.token,
            api_base=dc.api_base,
            proxy=proxy.url_with(PROXY_USER, "not-" + PASSWORD),
        )
        service: Any = None  # never reached: start-up fails first
        frontend = DiscordFrontend(settings, service, chat=ChatSettings())
        with pytest.raises(GatewayLookupFailed, match="407") as failed:
            await frontend.start()
        await frontend.close()
        assert dc.calls == []  # nothing went around the proxy
    assert [r.status for r in proxy.records] == [407]
    assert PASSWORD not in str(failed.value) and PASSWORD not in caplog.text
