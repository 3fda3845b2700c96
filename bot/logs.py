"""Logging set-up: one line per record as text or JSON, and the libraries' noise folded away."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that print request URLs, which carry bot tokens (PTB logs its base URL, httpx each
# request): kept at WARNING whatever the level.
_URL_LOGGERS = ("httpx", "httpcore")
# Libraries that repeat one problem many times (the hub retrying, transformers warning per
# file); the bot says it once, in one line, when loading fails.
_CHATTY_LOGGERS = ("huggingface_hub", "transformers", "filelock", "urllib3")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: str, *, format: str = "text", quiet: bool = False, stream: TextIO | None = None
) -> None:
    """Log `level` and above to stderr as `format` ("text" or "json"); `quiet`: warnings only."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else getattr(logging, level))
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not stream.isatty():
        # Progress bars are for a person at a terminal; in a log file they are noise.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
