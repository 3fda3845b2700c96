"""The user's turn: quotation, attached text files, and their limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.chat.turn import TurnComposer, is_text_file
from bot.config import ChatSettings
from bot.types import ChatError
from tests.chat.test_service import ALICE, SCRIPT, ask, prompt_text, running
from tests.support.models import build_scripted_model


def _composer(**settings: int) -> TurnComposer:
    return TurnComposer(ChatSettings(**settings))


def test_quote_file_and_question_in_that_order() -> None:
    composer = _composer()
    quote = composer.quote("line one\nline two", "other", "Bob")
    file = composer.read_file("notes.txt", b"hello\r\nworld\n")
    assert composer.compose("  What now?  ", quote=quote, files=[file]) == (
        "(Replying to a message from Bob:)\n> line one\n> line two\n\n"
        "File notes.txt:\n```\nhello\nworld\n```\n\nWhat now?"
    )


def test_a_quote_is_trimmed_to_the_configured_length_and_zero_turns_it_off() -> None:
    quote = _composer(reply_context_chars=10).quote("0123456789abc", "assistant")
    assert quote is not None and quote.text == "012345678…"
    assert _composer(reply_context_chars=0).quote("anything", "assistant") is None
    assert _composer().quote("   ", "user") is None


def test_a_fence_inside_a_file_does_not_end_its_block() -> None:
    composer = _composer()
    file = composer.read_file("README.md", b"Run:\n```sh\nmake\n```\n")
    turn = composer.compose("", files=[file])
    assert turn == "File README.md:\n````\nRun:\n```sh\nmake\n```\n````"


def test_file_names_lose_paths_and_line_breaks() -> None:
    file = _composer().read_file("../../etc/pass\nwd.txt", b"x")
    assert file.name == "pass wd.txt"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe\x00a", "not UTF-8"),
        (b"text with a \x00 byte", "not UTF-8"),
        (b"x" * 101, "too large"),
    ],
)
def test_unreadable_files_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ChatError, match=reason):
        _composer(max_attachment_bytes=100).read_file("a.txt", data)


def test_a_file_that_makes_the_turn_too_long_is_refused() -> None:
    composer = _composer(max_message_chars=50)
    file = composer.read_file("a.txt", b"x" * 60)
    with pytest.raises(ChatError, match=r"a\.txt your message is too long"):
        composer.compose("hi", files=[file])


def test_a_bom_is_dropped() -> None:
    assert _composer().read_file("a.csv", "\ufeffa,b\n".encode()).text == "a,b\n"


@pytest.mark.parametrize(
    ("name", "mime", "expected"),
    [
        ("notes.TXT", None, True),
        ("main.rs", None, True),
        ("Makefile", None, True),
        ("data.weird", "text/plain; charset=utf-8", True),
        ("photo.jpg", "image/jpeg", False),
        ("report.pdf", "application/pdf", False),
        ("archive", None, False),
    ],
)
def test_which_files_are_text(name: str, mime: str | None, expected: bool) -> None:
    assert is_text_file(name, mime) is expected


def test_check_file_refuses_before_download_by_type_or_size() -> None:
    composer = _composer(max_attachment_bytes=1024)
    composer.check_file("a.py", None, 1024)
    with pytest.raises(ChatError, match="too large for me"):
        composer.check_file("a.py", None, 1025)
    with pytest.raises(ChatError, match=r"I can't read song\.mp3"):
        composer.check_file("song.mp3", "audio/mpeg", 10)


async def test_a_file_and_a_quote_are_prompted_now_and_in_later_turns(
    tokenizer: Any, tmp_path: Path
) -> None:
    composer = _composer()
    turn = composer.compose(
        "Which is cheaper?",
        quote=composer.quote("Tea 3, coffee 4", "other", "Bob"),
        files=[composer.read_file("prices.csv", b"item,price\ntea,3\n")],
    )
    model = build_scripted_model(tokenizer, SCRIPT)
    async with running(model, tokenizer, tmp_path / "bot.db") as (app, engine):
        await ask(app, ALICE, turn)
        await ask(app, ALICE, "And the other?")
    first, later = (prompt_text(tokenizer, request) for request in engine.requests)
    expected = (
        "(Replying to a message from Bob:)\n> Tea 3, coffee 4\n\n"
        "File prices.csv:\n```\nitem,price\ntea,3\n```\n\nWhich is cheaper?"
    )
    assert expected in first and expected in later
