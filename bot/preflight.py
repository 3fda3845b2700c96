"""Checks made before anything is loaded: the platforms accept the tokens, the model fits.

A refused token or an unreachable platform found after a minute of loading weights (or a 9 GB
download) wastes the operator's first hour; these checks take a second. Each problem is one
line naming the config key to fix, and never the token itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bot.config import DiscordSettings, Settings, TelegramSettings

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PlatformCheck:
    """One enabled platform: who the bot is there, or what is wrong (one line)."""

    platform: str
    identity: str | None = None
    problem: str | None = None

    @property
    def is_ok(self) -> bool:
        return self.problem is None


async def check_platforms(settings: Settings) -> list[PlatformCheck]:
    """Ask each enabled platform who the bot is (Telegram getMe, Discord /users/@me)."""
    checks = []
    if settings.telegram.enabled:
        checks.append(check_telegram(settings.telegram))
    if settings.discord.enabled:
        checks.append(check_discord(settings.discord))
    return list(await asyncio.gather(*checks))


async def check_telegram(settings: TelegramSettings) -> PlatformCheck:
    if not settings.token:
        return PlatformCheck("telegram", problem="[telegram] token is empty")
    host = urlsplit(settings.base_url).netloc
    # The token is part of the URL (Bot API design): errors below name the host only.
    url = f"{settings.base_url}{settings.token}/getMe"
    try:
        async with _client(settings.proxy) as client:
            response = await client.get(url)
    except (httpx.HTTPError, ImportError) as error:  # ImportError: a SOCKS proxy without socksio
        return PlatformCheck(
            "telegram",
            problem=f"[telegram] cannot reach the Bot API at {host} ({type(error).__name__}); "
            "check base_url and proxy",
        )
    if response.status_code in (401, 404):
        # 401: unknown token; 404: a token that is not even well-formed.
        return PlatformCheck(
            "telegram",
            problem=f"[telegram] token: Telegram refused the bot token ({response.status_code})",
        )
    me = _result(response)
    if response.status_code != 200 or me is None:
        return PlatformCheck(
            "telegram",
            problem=f"[telegram] the Bot API at {host} answered getMe with HTTP "
            f"{response.status_code}; check base_url",
        )
    return PlatformCheck("telegram", identity=f"@{me.get('username')} (id {me.get('id')})")


async def check_discord(settings: DiscordSettings) -> PlatformCheck:
    if not settings.token:
        return PlatformCheck("discord", problem="[discord] token is empty")
    base = settings.api_base.rstrip("/")
    host = urlsplit(base).netloc
    try:
        async with _client(settings.proxy) as client:
            response = await client.get(
                f"{base}/users/@me", headers={"Authorization": f"Bot {settings.token}"}
            )
    except (httpx.HTTPError, ImportError) as error:
        return PlatformCheck(
            "discord",
            problem=f"[discord] cannot reach the Discord API at {host} "
            f"({type(error).__name__}); check api_base and proxy",
        )
    if response.status_code == 401:
        return PlatformCheck(
            "discord", problem="[discord] token: Discord refused the bot token (401)"
        )
    user = _json(response)
    if response.status_code != 200 or not isinstance(user, dict):
        return PlatformCheck(
            "discord",
            problem=f"[discord] the Discord API at {host} answered /users/@me with HTTP "
            f"{response.status_code}; check api_base",
        )
    return PlatformCheck("discord", identity=f"{user.get('username')} (id {user.get('id')})")


def _client(proxy: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT_SECONDS, proxy=proxy or None)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _result(response: httpx.Response) -> dict | None:
    body = _json(response)
    if isinstance(body, dict) and body.get("ok") and isinstance(body.get("result"), dict):
        return body["result"]
    return None
