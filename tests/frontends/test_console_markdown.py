"""The console's rendered answer (a colour terminal): Markdown and math, as the chats show them."""

from __future__ import annotations

import io
import re

from bot.frontends.console_ui import _MarkdownAnswer

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def rendered(*pieces: str) -> str:
    out = io.StringIO()
    answer = _MarkdownAnswer(out)
    for piece in pieces:
        answer.add(piece)
    answer.close()
    return _ESCAPES.sub("", out.getvalue())


def test_math_and_markdown_are_rendered_not_shown_as_source() -> None:
    text = rendered("So **half** of it: ", "\\(\\frac{1}{2} \\cdot ", "x^2\\), and \\(\\alpha\\).")
    assert "half" in text and "**" not in text
    assert "\\frac" not in text and "\\(" not in text
    assert "x²" in text and "α" in text and "·" in text


def test_code_keeps_its_latex_exactly() -> None:
    text = rendered("Write `\\frac{1}{2}` in LaTeX.")
    assert "\\frac{1}{2}" in text
