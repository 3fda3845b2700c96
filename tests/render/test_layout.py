"""ReplyView -> message texts for Telegram and Discord, in each reasoning mode."""

from __future__ import annotations

import html
import random
import re

import pytest

from bot.render.layout import (
    MARKER,
    TRIMMED_NOTE,
    DiscordLayout,
    ReplyView,
    TelegramLayout,
)
from bot.render.split import utf16_length
from bot.render.telegram_html import telegram_visible_length
from tests.render.helpers import SAMPLE, assert_telegram_html, random_markdown
from tests.render.math_corpus import CORPUS

REASONING = "\n".join(f"Step {i}: weigh option {i} against the others." for i in range(300))
ANSWER = "\n\n".join(
    f"Paragraph {i}: " + " ".join(f"w{i}_{j}" for j in range(60)) for i in range(40)
)


def _visible(html_text: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", html_text))


def _words(text: str) -> list[str]:
    return re.findall(r"w\d+_\d+", text)


def test_telegram_hidden_shows_only_the_status_while_thinking() -> None:
    layout = TelegramLayout("hidden")
    view = ReplyView(reasoning="secret thoughts", status="💭 Thinking… 10 s")
    assert layout.render(view) == ["<i>💭 Thinking… 10 s</i>" + MARKER]
    final = layout.render(
        ReplyView(reasoning="secret thoughts", answer="Hi **there**", is_final=True)
    )
    assert final == ["Hi <b>there</b>"]


def test_telegram_collapsed_puts_an_expandable_quote_above_the_answer() -> None:
    layout = TelegramLayout("collapsed")
    view = ReplyView(reasoning="I think **so**.", answer="Yes.", is_final=True)
    assert layout.render(view) == ["<blockquote expandable>I think <b>so</b>.</blockquote>\nYes."]


def test_telegram_collapsed_trims_long_reasoning_from_the_front() -> None:
    layout = TelegramLayout("collapsed")
    thinking = layout.render(ReplyView(reasoning=REASONING, status="💭 Thinking… 5 s"))
    assert len(thinking) == 1
    assert thinking[0].startswith(f"<blockquote expandable><i>{TRIMMED_NOTE}</i>\nStep ")
    assert "Step 299: weigh option 299 against the others.</blockquote>" in thinking[0]
    assert thinking[0].endswith("<i>💭 Thinking… 5 s</i>" + MARKER)
    assert telegram_visible_length(thinking[0]) <= 4096
    assert_telegram_html(thinking[0])


def test_telegram_collapsed_long_answer_continues_in_more_messages() -> None:
    layout = TelegramLayout("collapsed")
    messages = layout.render(
        ReplyView(reasoning=REASONING, answer=ANSWER, is_final=True, note="✂️ Cut")
    )
    assert len(messages) > 2
    assert messages[0].startswith("<blockquote expandable>")
    assert all("blockquote" not in m for m in messages[1:])
    assert all(telegram_visible_length(m) <= 4096 for m in messages)
    assert _words("\n".join(_visible(m) for m in messages)) == _words(ANSWER)
    assert messages[-1].endswith("\n\n<i>✂️ Cut</i>") and MARKER not in messages[-1]
    for message in messages:
        assert_telegram_html(message)


def test_telegram_full_shows_reasoning_as_plain_quotes_over_several_messages() -> None:
    layout = TelegramLayout("full")
    messages = layout.render(ReplyView(reasoning=REASONING, answer="The answer.", is_final=True))
    quoted = [m for m in messages if m.startswith("<blockquote>")]
    assert len(quoted) >= 3 and "expandable" not in "".join(messages)
    shown = "".join(_visible(m) for m in messages)
    assert all(f"Step {i}:" in shown for i in range(300))
    assert messages[-1].endswith("</blockquote>\nThe answer.")
    assert all(telegram_visible_length(m) <= 4096 for m in messages)


def test_discord_modes() -> None:
    hidden = DiscordLayout("hidden").render(
        ReplyView(reasoning="r", status="⏳ In queue: position 3")
    )
    assert hidden == ["-# ⏳ In queue: position 3" + MARKER]
    collapsed = DiscordLayout("collapsed").render(
        ReplyView(reasoning="line one\nline two", answer="**Answer**", is_final=True)
    )
    assert collapsed == ["> line one\n> line two\n**Answer**"]
    full = DiscordLayout("full").render(
        ReplyView(reasoning=REASONING, answer=ANSWER, is_final=True)
    )
    assert all(len(m) <= 2000 for m in full)
    assert full[0].startswith("> Step 0:")
    assert _words("\n".join(full)) == _words(ANSWER)


def test_discord_collapsed_trims_reasoning_and_closes_an_open_fence() -> None:
    layout = DiscordLayout("collapsed")
    reasoning = REASONING + "\n```py\nprint(1)"
    messages = layout.render(ReplyView(reasoning=reasoning, status="💭 Thinking… 5 s"))
    assert len(messages) == 1 and utf16_length(messages[0]) <= 2000
    lines = messages[0].split("\n")
    assert lines[0] == f"> *{TRIMMED_NOTE}*"
    assert lines[-4:] == ["> ```py", "> print(1)", "> ```", "-# 💭 Thinking… 5 s" + MARKER]


def test_discord_marker_after_a_code_block_goes_on_its_own_line() -> None:
    messages = DiscordLayout("hidden").render(ReplyView(answer="Code:\n```py\nx = 1"))
    assert messages == ["Code:\n```py\nx = 1\n```\n▌"]


def test_an_empty_final_reply_still_has_text() -> None:
    for layout in (TelegramLayout("hidden"), DiscordLayout("hidden")):
        assert layout.render(ReplyView(is_final=True))[0].strip()
        assert "⚠️ Failed" in layout.render(ReplyView(is_final=True, note="⚠️ Failed"))[0]


def test_a_long_note_that_does_not_fit_gets_its_own_message() -> None:
    layout = TelegramLayout("hidden", limit=500)
    answer = " ".join(f"w0_{j}" for j in range(50))
    messages = layout.render(ReplyView(answer=answer, is_final=True, note="n" * 300))
    assert len(messages) == 2 and messages[1] == "<i>" + "n" * 300 + "</i>"


@pytest.mark.parametrize("mode", ["hidden", "collapsed", "full"])
def test_streaming_partial_markdown_gives_valid_html_in_every_message(mode: str) -> None:
    layout = TelegramLayout(mode, limit=400)
    reasoning = SAMPLE
    for end in range(0, len(SAMPLE) + 1, 3):
        for view in (
            ReplyView(reasoning=reasoning[:end], status="💭 Thinking… 5 s"),
            ReplyView(reasoning=reasoning, answer=SAMPLE[:end]),
        ):
            for message in layout.render(view):
                assert_telegram_html(message)
                assert telegram_visible_length(message) <= 400


@pytest.mark.parametrize("mode", ["hidden", "collapsed", "full"])
def test_growing_answer_never_loses_messages_and_fits(mode: str) -> None:
    rng = random.Random(mode)
    for layout in (TelegramLayout(mode, limit=500), DiscordLayout(mode, limit=450)):
        reasoning = random_markdown(rng)
        answer = "".join(random_markdown(rng) for _ in range(3))
        previous: list[str] = []
        for end in [*range(0, len(answer), 17), len(answer)]:
            messages = layout.render(ReplyView(reasoning=reasoning, answer=answer[:end]))
            assert all(layout.measure(m) <= layout.limit for m in messages)
            assert len(messages) >= len(previous)
            # Once a message is no longer the last one, its text stays.
            if previous:
                assert messages[: len(previous) - 1] == previous[:-1]
            previous = messages


def test_marker_only_while_streaming() -> None:
    for layout in (TelegramLayout("collapsed"), DiscordLayout("collapsed")):
        streaming = layout.render(ReplyView(reasoning="r", answer=ANSWER))
        assert streaming[-1].endswith(MARKER)
        assert not any(m.endswith(MARKER) for m in streaming[:-1])
        final = layout.render(ReplyView(reasoning="r", answer=ANSWER, is_final=True))
        assert not any(MARKER.strip() in m for m in final)
        assert final[:-1] == streaming[:-1]


def test_layout_rejects_unknown_mode_and_tiny_limit() -> None:
    with pytest.raises(ValueError):
        TelegramLayout("verbose")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DiscordLayout("hidden", limit=100)


@pytest.mark.parametrize("platform", ["telegram", "discord"])
def test_math_is_shown_as_unicode_and_half_formulas_never_flash_up(platform: str) -> None:
    layout = (
        TelegramLayout("collapsed", limit=500)
        if platform == "telegram"
        else DiscordLayout("collapsed", limit=450)
    )
    visible = _visible if platform == "telegram" else (lambda text: text)
    reasoning = r"We need \( x \) with \( 2x = 14 \)."
    answer = CORPUS["boxed_answer"] + "\n\n" + CORPUS["fractions_and_roots"]
    for end in range(0, len(answer), 3):
        messages = layout.render(ReplyView(reasoning=reasoning, answer=answer[:end]))
        # Every backslash in this answer belongs to a formula: none may show, even half-sent.
        assert "\\" not in visible("\n".join(messages)), answer[:end]
    final = "\n".join(layout.render(ReplyView(reasoning, answer, is_final=True)))
    assert "\\" not in visible(final)
    assert "We need x with 2x = 14." in visible(final)
    assert "x = (-b ± √(b² - 4ac))/(2a)" in visible(final)
    assert ("<b>7</b>" if platform == "telegram" else "**7**") in final
