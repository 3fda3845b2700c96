"""Keeping secrets (bot tokens, proxy passwords) out of logs and printed settings."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

REDACTED = "<redacted>"


def url_password(url: str) -> str:
    """The password in a URL's user info (proxy URLs carry one), or ''."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def hide_password(url: str) -> str:
    """`url` with the password of its user info, if any, replaced by REDACTED."""
    password = url_password(url)
    return url.replace(f":{password}@", f":{REDACTED}@", 1) if password else url


class SecretFilter(logging.Filter):
    """Replaces each secret in a record's rendered message (httpx logs URLs with the token in)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = message
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, REDACTED)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class Redaction:
    """Attaches a SecretFilter to every logger under the given names, for a while.

    A logger's filters see only the records logged on that very logger (not its children's),
    so the filter goes on each existing descendant too: call install() after the libraries
    were imported (they create their loggers at import time).
    """

    def __init__(self, secrets: Iterable[str], namespaces: Iterable[str]) -> None:
        self._filter = SecretFilter(secrets)
        self._namespaces = tuple(namespaces)
        self._loggers: list[logging.Logger] = []

    def install(self) -> None:
        names = set(self._namespaces)
        names.update(
            name
            for name in list(logging.root.manager.loggerDict)
            if name.startswith(tuple(f"{space}." for space in self._namespaces))
        )
        self._loggers = [logging.getLogger(name) for name in sorted(names)]
        for logger in self._loggers:
            logger.addFilter(self._filter)

    def remove(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self._filter)
        self._loggers = []
