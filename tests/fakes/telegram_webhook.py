"""Webhooks in the fake Bot API: setWebhook's checks, the state it keeps, delivery to the bot.

Like a local Bot API server (``telegram-bot-api --local``), the fake takes plain-HTTP URLs on
any port, so a bot's own webhook listener on 127.0.0.1 can be the target; the cloud API would
ask for HTTPS on port 443, 80, 88 or 8443.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from .telegram_methods import ApiError, Params

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
TERMINATED_BY_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
DELIVERY_TIMEOUT_S = 10.0
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]*")
MAX_SECRET_LENGTH = 256


class Secret(Enum):
    """The secret a delivery sends when none is given: the one set with setWebhook."""

    REGISTERED = "registered"


SecretChoice = str | None | Literal[Secret.REGISTERED]


@dataclass
class Webhook:
    """A webhook set with setWebhook, and how delivering to it last went."""

    url: str
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    ip_address: str | None = None
    has_custom_certificate: bool = False
    last_error_date: int | None = None
    last_error_message: str | None = None

    def to_api(self, pending_update_count: int) -> dict[str, Any]:
        """The Bot API WebhookInfo object (the secret is never shown back)."""
        info: dict[str, Any] = {
            "url": self.url,
            "has_custom_certificate": self.has_custom_certificate,
            "pending_update_count": pending_update_count,
            "max_connections": self.max_connections,
        }
        if self.ip_address:
            info["ip_address"] = self.ip_address
        if self.allowed_updates is not None:
            info["allowed_updates"] = list(self.allowed_updates)
        if self.last_error_date is not None:
            info["last_error_date"] = self.last_error_date
            info["last_error_message"] = self.last_error_message
        return info


def no_webhook_info(num_pending: int) -> dict[str, Any]:
    """WebhookInfo while no webhook is set (the bot uses getUpdates)."""
    return {"url": "", "has_custom_certificate": False, "pending_update_count": num_pending}


def webhook_from_params(params: Params) -> Webhook | None:
    """The webhook setWebhook asks for (None: an empty url removes it), checked as Telegram does."""
    url = str(params.get("url") or "")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    if not parts.hostname:
        raise ApiError(
            400, "Bad Request: bad webhook: Failed to resolve host: Name or service not known"
        )
    secret = params.get("secret_token")
    secret = str(secret) if secret not in (None, "") else None
    if secret is not None:
        if len(secret) > MAX_SECRET_LENGTH:
            raise ApiError(400, "Bad Request: secret token is too long")
        if not _SECRET_RE.fullmatch(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    max_connections = params.get("max_connections", 40)
    if not isinstance(max_connections, int) or not 1 <= max_connections <= 100:
        raise ApiError(400, "Bad Request: max_connections must be between 1 and 100")
    allowed = params.get("allowed_updates")
    return Webhook(
        url=url,
        secret_token=secret,
        allowed_updates=list(allowed) if allowed else None,
        max_connections=max_connections,
        ip_address=params.get("ip_address") or None,
        has_custom_certificate=bool(params.get("certificate")),
    )


@dataclass
class WebhookDelivery:
    """One POST of an update to a webhook, and how the bot's server answered it."""

    update: dict[str, Any]
    url: str
    secret_token: str | None  # the X-Telegram-Bot-Api-Secret-Token header sent, if any
    status: int | None = None  # HTTP status; None when no answer came (connection refused)
    error: str | None = None  # why it failed, as getWebhookInfo's last_error_message says it

    @property
    def is_ok(self) -> bool:
        """Whether the bot took the update (any 2xx answer, as for Telegram)."""
        return self.status is not None and 200 <= self.status < 300


async def post_update(
    session: aiohttp.ClientSession, url: str, update: dict[str, Any], secret: str | None
) -> WebhookDelivery:
    """POST an update the way Telegram does: a JSON body and the secret header when set."""
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    delivery = WebhookDelivery(update=update, url=url, secret_token=secret)
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S)
    try:
        async with session.post(url, json=update, headers=headers, timeout=timeout) as response:
            await response.read()
            delivery.status = response.status
    except aiohttp.ClientConnectorError as error:
        delivery.error = _connect_error(error)
    except (aiohttp.ClientError, TimeoutError) as error:
        delivery.error = f"Connection error: {error!r}"
    if delivery.status is not None and not delivery.is_ok:
        delivery.error = f"Wrong response from the webhook: {_status_line(delivery.status)}"
    return delivery


def record_outcome(webhook: Webhook, delivery: WebhookDelivery) -> None:
    """getWebhookInfo reports the last failed delivery, as Telegram does."""
    if delivery.error is not None:
        webhook.last_error_date = int(time.time())
        webhook.last_error_message = delivery.error


def _connect_error(error: aiohttp.ClientConnectorError) -> str:
    if isinstance(error.os_error, ConnectionRefusedError):
        return "Connection refused"
    return f"Connection error: {error.os_error!r}"


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
