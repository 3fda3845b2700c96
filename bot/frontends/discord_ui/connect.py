"""Pointing one discord.py client at `[discord] api_base`: REST base and gateway, per client."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import yarl

DEFAULT_API_BASE = "https://discord.com/api/v10"


class GatewayLookupFailed(Exception):
    """GET {api_base}/gateway/bot failed; the text says why (never the token)."""


class RedirectConnector(aiohttp.TCPConnector):
    """aiohttp connector that sends one discord.py client's Discord traffic elsewhere.

    discord.py builds every URL from the class-level `Route.BASE` (REST and the webhook
    adapter used for interaction responses) and connects a plain `Client` to the class-level
    `DiscordWebSocket.DEFAULT_GATEWAY`; both are process-wide. All that traffic goes through
    the client's one aiohttp session, whose connector is a per-client constructor argument
    (`Client(connector=...)`), so the rewrite lives here instead of in module globals.
    """

    def __init__(self, api_base: str, gateway_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_base = yarl.URL(api_base.rstrip("/"))
        self.gateway_url = yarl.URL(gateway_url)

    def rewrite(self, url: yarl.URL) -> yarl.URL:
        """Maps https://discord.com/api[/vN]/... and wss://gateway.discord.gg/ to the targets."""
        if url.host == "discord.com" and url.path.startswith("/api/"):
            rest = url.path[len("/api") :]
            if re.match(r"/v\d+/", rest):
                rest = rest[rest.index("/", 1) :]
            target = self.api_base.with_path(self.api_base.path + rest, encoded=False)
            return target.with_query(url.query)
        if url.host == "gateway.discord.gg":
            return self.gateway_url.with_query(url.query)
        return url

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        # The request line is written after the connection exists, so rewriting here
        # changes both where the connection goes and the path that is sent.
        req.url = self.rewrite(req.url)
        return await super().connect(req, traces, timeout)


async def fetch_gateway_url(api_base: str, token: str, *, proxy: str | None = None) -> str:
    """Asks GET {api_base}/gateway/bot for the gateway URL, as AutoShardedClient does."""
    url = f"{api_base.rstrip('/')}/gateway/bot"
    headers = {"Authorization": f"Bot {token}"}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, proxy=proxy or None) as resp,
        ):
            if resp.status == 401:
                raise GatewayLookupFailed(f"{url}: the bot token was rejected (401)")
            if resp.status >= 400:
                raise GatewayLookupFailed(f"{url}: HTTP {resp.status}")
            return str((await resp.json())["url"])
    except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
        # Their text names the URL, never the headers (where the token is); no traceback chain.
        raise GatewayLookupFailed(f"{url}: {type(exc).__name__}: {exc}") from None


async def connector_for(
    api_base: str, token: str, *, proxy: str | None = None
) -> RedirectConnector:
    """A connector for `discord.Client(connector=...)` pointing REST and gateway at api_base."""
    return RedirectConnector(api_base, await fetch_gateway_url(api_base, token, proxy=proxy))


def is_default_api_base(api_base: str) -> bool:
    return api_base.rstrip("/") == DEFAULT_API_BASE
