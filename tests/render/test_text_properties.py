"""Properties on arbitrary Unicode: the Markdown splitter and Markdown -> Telegram HTML."""

from __future__ import annotations

import html
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.render.split import split_markdown, utf16_length
from bot.render.telegram_html import markdown_to_telegram_html
from tests.render.helpers import assert_telegram_html

FAST = settings(max_examples=200, deadline=None)

_MARKUP = [
    "**", "*", "_", "__", "~~", "`", "```", "```py\n", "~~~\n", "\n```\n", "# ", "> ", "- ",
    "1. ", "|", "---", "[", "]", "](https://example.com/a_b)", "](tg://user?id=1)", "](x)",
    "<https://t.me/x>", "![", "<b>", "</i>", "&", "&amp;", "&#0;", "&#x110000;", "\\", "\n",
    "\n\n", " ", "    ", "\t", "\r\n",
]  # fmt: skip
# Markdown-heavy text: markup tokens between runs of any Unicode.
_MARKDOWN = st.lists(st.one_of(st.sampled_from(_MARKUP), st.text(max_size=10)), max_size=25).map(
    "".join
)
_LONG_WORD = st.text(st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc")), min_size=17)
_SPLITTABLE = st.lists(st.one_of(_MARKDOWN, _LONG_WORD), max_size=4).map("".join)


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _is_subsequence(small: str, large: str) -> bool:
    rest = iter(large)
    return all(char in rest for char in small)


# -- splitting -------------------------------------------------------------------------------


@FAST
@given(
    _SPLITTABLE,
    st.sampled_from([16, 17, 24, 40, 100]),
    st.sampled_from([None, 16, 30]),
    st.sampled_from([len, utf16_length]),
)
def test_every_piece_fits_and_no_text_is_lost(
    text: str, limit: int, first_limit: int | None, measure
) -> None:
    pieces = split_markdown(text, limit, first_limit=first_limit, measure=measure)
    for i, piece in enumerate(pieces):
        cap = first_limit if (i == 0 and first_limit is not None) else limit
        assert measure(piece) <= cap, (i, piece)
        assert piece.strip(), i
    kept, original = _squeeze("".join(pieces)), _squeeze(text)
    if "```" in text or "~~~" in text:
        # Cuts inside a code block close and reopen the fence: only fence lines are added.
        assert _is_subsequence(original, kept)
    else:
        assert kept == original  # only whitespace at the cuts is dropped


# -- Markdown -> Telegram HTML ---------------------------------------------------------------


@FAST
@given(_MARKDOWN, st.integers(min_value=0))
def test_any_markdown_and_any_prefix_of_it_is_valid_telegram_html(text: str, cut: int) -> None:
    # While an answer streams, every prefix of it is shown.
    for markdown in (text, text[: cut % (len(text) + 1)]):
        assert_telegram_html(markdown_to_telegram_html(markdown))
        quoted = markdown_to_telegram_html(markdown, quoted=True)
        assert_telegram_html(f"<blockquote expandable>{quoted}</blockquote>")


@FAST
@given(_SPLITTABLE, st.sampled_from([16, 40, 100]))
def test_each_split_piece_renders_to_valid_telegram_html(text: str, limit: int) -> None:
    for piece in split_markdown(text, limit, measure=utf16_length):
        assert_telegram_html(markdown_to_telegram_html(piece))


# Words of letters from every script, in Markdown that cannot hide a word: no link
# destinations, no fence info strings, no entities (no ';'), no list numbers (no digits).
_WORD = st.text(st.characters(categories=("Lu", "Ll", "Lo")), min_size=1, max_size=8)


def _wrapped(template: str) -> st.SearchStrategy[str]:
    return st.lists(_WORD, min_size=1, max_size=3).map(lambda ws: template.format(" ".join(ws)))


_INLINE = st.one_of(
    _WORD,
    _wrapped("**{}**"),
    _wrapped("*{}*"),
    _wrapped("_{}_"),
    _wrapped("~~{}~~"),
    _wrapped("`{}`"),
    _wrapped("[{}]"),
    st.sampled_from([" ", " * ", " _ ", " < ", " & ", " | ", "\\", "!", "\n"]),
)
_LINE = st.tuples(
    st.sampled_from(["", "", "# ", "## ", "> ", "- ", "* ", "1. ", "    ", "  - "]),
    st.lists(_INLINE, max_size=6).map(" ".join),
).map("".join)
_BLOCK = st.one_of(
    st.lists(_LINE, min_size=1, max_size=4).map("\n".join),
    st.lists(_WORD, max_size=6).map(lambda ws: "```\n" + "\n".join(ws) + "\n```"),
    st.lists(_WORD, min_size=4, max_size=4).map(
        lambda ws: f"| {ws[0]} | {ws[1]} |\n|---|---|\n| {ws[2]} | {ws[3]} |"
    ),
)
_DOCUMENT = st.lists(_BLOCK, min_size=1, max_size=5).map("\n\n".join)
_WORDS = re.compile(r"[^\W\d_]+")


@FAST
@given(_DOCUMENT)
def test_no_word_is_lost_in_the_conversion(markdown: str) -> None:
    rendered = markdown_to_telegram_html(markdown)
    assert_telegram_html(rendered)
    visible = html.unescape(re.sub(r"<[^>]*>", " ", rendered))
    for word in _WORDS.findall(markdown):
        assert word in visible, (word, rendered)
