"""Log lines as text or JSON; library noise and URL-carrying loggers kept down."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_the_exception():
    stream = io.StringIO()
    configure_logging("INFO", format="json", stream=stream)
    logging.getLogger("bot.chat").info("reply %s done", "telegram:1:2")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bot.engine").exception("step failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "bot.chat"
    assert first["message"] == "reply telegram:1:2 done"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_text_lines_and_levels():
    stream = io.StringIO()
    configure_logging("WARNING", stream=stream)
    logging.getLogger("bot").info("hidden")
    logging.getLogger("bot").warning("shown")
    assert stream.getvalue().count("\n") == 1
    assert " WARNING bot: shown" in stream.getvalue()


def test_url_loggers_and_chatty_libraries_are_kept_down():
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot123:secret/")
    logging.getLogger("huggingface_hub").warning("retrying in 1s")
    assert stream.getvalue() == ""
