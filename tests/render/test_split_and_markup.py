"""Splitting Markdown at a limit, Markdown -> Telegram HTML, Discord helpers."""

from __future__ import annotations

import random
import re

import pytest
from markdown_it import MarkdownIt

from bot.render.discord_text import (
    discord_quote,
    discord_quote_length,
    discord_spoiler,
    escape_discord_markdown,
)
from bot.render.split import close_open_fence, split_markdown, tail_markdown, utf16_length
from bot.render.telegram_html import markdown_to_telegram_html, telegram_visible_length
from tests.fakes.telegram_html import parse_html, utf16_len
from tests.render.helpers import SAMPLE, assert_telegram_html, random_markdown

_FENCE_LINE = re.compile(r"^(`{3,}|~{3,})[^\n`]*$")


def _variants(piece: str) -> list[tuple[str, bool, bool]]:
    """The piece with an added reopening line and/or closing line taken off."""
    lines = piece.split("\n")
    first = len(lines) > 1 and bool(_FENCE_LINE.match(lines[0]))
    last = len(lines) > 1 and bool(_FENCE_LINE.match(lines[-1]))
    out = [(piece, False, False)]
    if first:
        out.append(("\n".join(lines[1:]), True, False))
    if last:
        out.append(("\n".join(lines[:-1]), False, True))
    if first and last and len(lines) > 2:
        out.append(("\n".join(lines[1:-1]), True, True))
    return out


def _reconstructs(text: str, pieces: list[str]) -> bool:
    """Do the pieces, minus added fences, make up `text` with only whitespace between them?"""

    def walk(i: int, pos: int, closed_added: bool) -> bool:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if i == len(pieces):
            return pos == len(text)
        for body, reopened, closed in _variants(pieces[i]):
            if reopened != closed_added:  # a fence is reopened exactly after one was closed
                continue
            if reopened and not _reopens_enclosing_fence(text, pos, pieces[i].split("\n")[0]):
                continue
            body = body.lstrip()  # indentation kept at a cut is whitespace at the cut too
            if text.startswith(body, pos) and walk(i + 1, pos + len(body), closed):
                return True
        return False

    return walk(0, 0, False)


def _reopens_enclosing_fence(text: str, pos: int, reopen_line: str) -> bool:
    """The reopening line repeats the opening line of the fence that `pos` is inside."""
    fence_lines = [
        line.strip() for line in text[:pos].split("\n") if _FENCE_LINE.match(line.strip())
    ]
    return bool(fence_lines) and fence_lines[-1] == reopen_line.strip()


def _ends_outside_code(piece: str) -> bool:
    """markdown-it (not our scanner) agrees that every code block in the piece is closed."""
    rendered = MarkdownIt("commonmark").render(piece + "\n\nSENTINEL")
    return "<p>SENTINEL</p>" in rendered


@pytest.mark.parametrize("measure", [len, utf16_length], ids=["chars", "utf16"])
def test_split_properties_on_random_markdown(measure) -> None:
    rng = random.Random(20240607)
    for _ in range(250):
        text = random_markdown(rng)
        limit = rng.choice([16, 24, 40, 64, 100, 257, 1000])
        first_limit = rng.choice([None, limit, max(16, limit // 2)])
        pieces = split_markdown(text, limit, first_limit=first_limit, measure=measure)
        context = f"limit={limit} first={first_limit} text={text!r} pieces={pieces!r}"
        for i, piece in enumerate(pieces):
            cap = first_limit if (i == 0 and first_limit is not None) else limit
            assert measure(piece) <= cap, context
            assert piece.strip(), context
        assert _reconstructs(text, pieces), context
        if min(limit, first_limit or limit) >= 32:  # room for the fence lines
            for piece in pieces[:-1]:
                assert _ends_outside_code(piece), context


def test_split_fits_in_one_piece_and_empty_text() -> None:
    assert split_markdown("short text", 100) == ["short text"]
    assert split_markdown("  \n\n ", 100) == []
    assert split_markdown("", 100) == []


def test_split_prefers_paragraph_then_line_then_word() -> None:
    para = "alpha beta gamma delta\n\nepsilon zeta eta theta"
    assert split_markdown(para, 30) == ["alpha beta gamma delta", "epsilon zeta eta theta"]
    lines = "alpha beta gamma delta\nepsilon zeta eta theta"
    assert split_markdown(lines, 30) == ["alpha beta gamma delta", "epsilon zeta eta theta"]
    words = "alpha beta gamma delta epsilon zeta eta theta"
    assert split_markdown(words, 30) == ["alpha beta gamma delta epsilon", "zeta eta theta"]


def test_split_cuts_a_word_longer_than_the_limit() -> None:
    assert split_markdown("x" * 40, 16) == ["x" * 16, "x" * 16, "x" * 8]


def test_split_closes_and_reopens_a_code_fence_with_its_language() -> None:
    code = "\n".join(f"line_{i} = {i}" for i in range(12))
    text = f"Intro.\n\n```python\n{code}\n```\n\nOutro."
    pieces = split_markdown(text, 80)
    assert len(pieces) > 2
    for piece in pieces[1:-1]:
        assert piece.startswith("```python\n") and piece.endswith("\n```"), pieces
    assert pieces[0].endswith("\n```") and pieces[-1].endswith("Outro.")
    joined = "\n".join(p.removeprefix("```python\n").removesuffix("\n```") for p in pieces)
    assert all(f"line_{i} = {i}" in joined for i in range(12))


def test_split_never_starts_a_piece_with_the_closing_fence() -> None:
    text = "```\n" + "y" * 30 + "\n```\nafter"
    for limit in range(16, 50):
        for piece in split_markdown(text, limit):
            assert not piece.startswith("```\n```"), (limit, piece)
            assert piece != "```", limit


def test_split_counts_utf16_units_when_asked() -> None:
    text = "😀" * 30
    pieces = split_markdown(text, 16, measure=utf16_length)
    assert [len(p) for p in pieces] == [8, 8, 8, 6]


def test_split_rejects_a_tiny_limit() -> None:
    with pytest.raises(ValueError):
        split_markdown("text", 5)


def test_tail_keeps_the_end_from_a_line_start() -> None:
    text = "\n".join(f"step {i}: thinking about it" for i in range(50))
    tail, trimmed = tail_markdown(text, 100)
    assert trimmed and len(tail) <= 100
    assert text.endswith(tail) and tail.startswith("step ")
    assert tail_markdown("short", 100) == ("short", False)


def test_tail_reopens_a_code_fence() -> None:
    text = "Plan.\n\n```js\n" + "\n".join(f"let v{i} = {i};" for i in range(40)) + "\n```\nDone."
    tail, trimmed = tail_markdown(text, 120)
    assert trimmed and len(tail) <= 120
    assert tail.startswith("```js\nlet v") and tail.endswith("```\nDone.")


# -- Telegram HTML -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*it* _it_ ~~gone~~", "<i>it</i> <i>it</i> <s>gone</s>"),
        ("a `x < y && z` b", "a <code>x &lt; y &amp;&amp; z</code> b"),
        (
            "```python\nif a < b:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>',
        ),
        ("```\nplain\n```", "<pre>plain</pre>"),
        (
            '[site](https://example.com/?a=1&b="2")',
            '<a href="https://example.com/?a=1&amp;b=%222%22">site</a>',
        ),
        ("# Title\ntext", "<b>Title</b>\n\ntext"),
        ("## **Bold** title", "<b>Bold title</b>"),
        ("- one\n- two\n  - deep", "• one\n• two\n  • deep"),
        ("1. one\n1. two", "1. one\n2. two"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("> quoted\n> > nested", "<blockquote>quoted\n\nnested</blockquote>"),
        ("1 < 2 & 3 > 2 <b>raw</b>", "1 &lt; 2 &amp; 3 &gt; 2 &lt;b&gt;raw&lt;/b&gt;"),
        ("[bad](javascript:alert(1)) [rel](/path)", "[bad](javascript:alert(1)) rel"),
        ("line one\nline two", "line one\nline two"),
        ("---", "———"),
        ("| a | b |\n|---|---|\n| 10 | 2 |", "<pre>a  | b\n---+--\n10 | 2</pre>"),
    ],
)
def test_markdown_to_telegram_html(markdown: str, html: str) -> None:
    assert markdown_to_telegram_html(markdown) == html
    assert_telegram_html(html)


def test_quoted_html_flattens_quotes_inside() -> None:
    html = markdown_to_telegram_html("> a quote\n\ntext", quoted=True)
    assert "<blockquote>" not in html and "a quote" in html


def test_every_prefix_of_streaming_markdown_gives_valid_telegram_html() -> None:
    for end in range(len(SAMPLE) + 1):
        html = markdown_to_telegram_html(SAMPLE[:end])
        assert_telegram_html(html)


def test_unclosed_fence_and_bold_give_balanced_html() -> None:
    html = markdown_to_telegram_html("Here:\n```js\nlet a = '**';\nconsole.log(a)")
    assert (
        html
        == "Here:\n\n<pre><code class=\"language-js\">let a = '**';\nconsole.log(a)</code></pre>"
    )
    assert markdown_to_telegram_html("**half bold") == "**half bold"


def test_random_markdown_gives_valid_html_and_matching_visible_length() -> None:
    rng = random.Random(7)
    for _ in range(150):
        text = random_markdown(rng)
        cut = rng.randint(0, len(text))
        html = markdown_to_telegram_html(text[:cut])
        assert_telegram_html(html)
        assert telegram_visible_length(html) == utf16_len(parse_html(html).text)


def test_visible_length_counts_utf16_after_entities() -> None:
    assert telegram_visible_length("<b>a&amp;b</b> 😀") == 6
    assert telegram_visible_length('<a href="https://x.y/very/long">t</a>') == 1
    assert utf16_length("a😀") == 3


# -- Discord -----------------------------------------------------------------------------------


def test_close_open_fence() -> None:
    assert close_open_fence("a\n```py\ncode") == "a\n```py\ncode\n```"
    assert close_open_fence("a\n~~~~\ncode") == "a\n~~~~\ncode\n~~~~"
    assert close_open_fence("a\n```\ncode\n```") == "a\n```\ncode\n```"
    assert close_open_fence("no fences") == "no fences"


def test_discord_helpers() -> None:
    assert discord_quote("one\n\ntwo") == "> one\n> \n> two"
    assert discord_quote_length("one\n\ntwo") == len(discord_quote("one\n\ntwo")) - 2
    assert discord_spoiler("a || b") == "||a \\|\\| b||"
    assert (
        escape_discord_markdown("*x* _y_ `z` ~~w~~ |s|")
        == "\\*x\\* \\_y\\_ \\`z\\` \\~\\~w\\~\\~ \\|s\\|"
    )
    assert escape_discord_markdown("# h\n> q\n- l") == "\\# h\n\\> q\n\\- l"
