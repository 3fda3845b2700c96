r"""LaTeX math in the model's Markdown -> readable Unicode text, before Markdown is rendered.

R1 writes math as LaTeX: `\( x^2 \)` inline, `\[ \boxed{7} \]` on its own lines, sometimes
`$...$` and `$$...$$`. CommonMark's backslash escapes would eat the delimiters and chat apps do
not typeset LaTeX, so `render_math` replaces every formula with Unicode text (x², ½, √, α, rows
for aligned equations and matrices), `\boxed{x}` with `**x**`, and leaves everything else as
written: code spans and code blocks, prices (`$5 and $10`), and a formula it cannot convert,
which is shown as its source in a code span. The result is Markdown for the existing
Telegram-HTML and Discord conversions; characters the conversion produces that Markdown would
read as markup (`*`, `_`, `|`, a leading `-`) are escaped.

Where formulas are: `\(…\)`, `\[…\]`, `$$…$$` and `$…$`, none across a blank line or a code
block. A `$…$` stays on one line, its opening `$` is followed by a non-space, its closing `$` is
preceded by a non-space and not followed by a letter or digit, and `$` followed by a number and
then a space or punctuation is a price, not math. A delimiter that does not form a formula is
kept visible (`\(` stays `\(`).

Streaming: the answer is re-converted on every edit. A construct whose meaning the rest of the
text can still change (an opened formula not yet closed, a `$` whose role is not yet known, a
trailing backslash) is held back while `is_complete` is False: the output stops just before
it and shows it once it is decided. So the output for a prefix of an answer is always a prefix
of the output for the whole, earlier text never changes, and raw LaTeX never flashes up. When
the answer is complete, an unfinished formula is shown as written.

Library choice (R1-style corpus in tests/render/math_corpus.py, 52 formulas):

  library              | right                            | wrong
  ---------------------+----------------------------------+-----------------------------------
  pylatexenc           | a real parser; Greek, \text,     | a+b/c-d without parentheses; x^2
  (LatexNodes2Text)    | \left/\right                     | stays x^2; \ne, \implies, \dfrac,
                       |                                  | \binom dropped silently; unknown
                       |                                  | commands reduced to their argument
  unicodeit (replace)  | the largest symbol table (4,000+ | plain substring substitution:
                       | commands), sub/superscripts,     | \left -> ≤ft, \log -> łog; \frac,
                       | \mathbb and other alphabets      | \sqrt, \text, environments kept
  flatlatex            | fractions, scripts, √            | \le, \ne, \to, \text, \mathrm, \left,
                       |                                  | environments unknown and glued to
                       |                                  | the next word (\leb); unmaintained
  telegramify-markdown | the best whole formulas:         | converter is an internal module;
  (its LaTeX helper)   | fractions, cases, matrices       | \ne, \dfrac unknown; √ drawn with
                       |                                  | combining overlines; unknown
                       |                                  | commands lose their braces silently

None converts R1's answers well on its own, and none reports what it could not convert. We use
unicodeit's tables (symbols, sub/superscript letters, math alphabets, accents: the LaTeX ->
Unicode vocabulary) with our own small parser in bot/render/latex.py, which does the layout
(fractions, roots, scripts, environments) and raises on anything unknown, so that formula falls
back to its source instead of being mangled.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from bot.render.latex import BOLD_CLOSE, BOLD_OPEN, UnsupportedLatex, latex_to_text

__all__ = ["render_math"]


def render_math(markdown: str, *, is_complete: bool = True) -> str:
    """`markdown` with every LaTeX formula replaced by readable Unicode text.

    `is_complete=False` while the answer is still streaming: a formula (or `$`) that is not
    yet decided is held back, so the result only ever grows as the answer grows.
    """
    if "\\" not in markdown and "$" not in markdown:
        return markdown
    return _Converter(markdown, is_complete=is_complete).run()


# ---------------------------------------------------------------------------------------------
# Markdown structure


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # The same CommonMark flavour as the Telegram conversion, so code blocks are the same.
    return MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class _CodeBlock:
    start: int
    end: int
    is_unsure: bool  # a fence whose opening line is still being written ("```py" + "`"?)


def _code_blocks(text: str) -> list[_CodeBlock]:
    """Fenced and indented code blocks, in order."""
    line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]
    blocks = []
    for token in _parser().parse(text):
        if token.type in ("fence", "code_block") and token.map:
            first, last = token.map
            end = line_starts[last] if last < len(line_starts) else len(text)
            is_unsure = token.markup.startswith("`") and first + 1 >= len(line_starts)
            blocks.append(_CodeBlock(line_starts[first], end, is_unsure))
    return blocks


# What may precede a formula on its line for it to start the line: indentation, quote markers
# and list markers.
_CONTAINER = re.compile(r"(?:[ \t]*(?:>|[-+*](?=[ \t])|\d{1,9}[.)](?=[ \t])))*[ \t]*")
_LIST_MARKER = re.compile(r"[-+*]|\d{1,9}[.)]")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_SPECIAL = re.compile(r"[\\`$]")
_MATH_START = re.compile(r"[\\$]")
_BOLD_RUN = re.compile(r"\*{2,}")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_~|\[\]<>&])")
_LINE_START_MARKER = re.compile(r"[#+=>-]")
_ORDERED_MARKER = re.compile(r"(\d{1,9})([.)])(?=[ \t]|$)")
# A $ followed by an amount and then a space, the end of the line or punctuation: a price.
_PRICE = re.compile(r"\d[\d.,]*(?=[\s)\]},;:!?%/]|$)")


def _escape(text: str) -> str:
    """Converted formula text made literal for Markdown (Telegram's and Discord's)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _guard_line_start(line: str) -> str:
    """Escape what would make a line a heading, list item, quote or setext underline."""
    if _LINE_START_MARKER.match(line):
        return "\\" + line
    match = _ORDERED_MARKER.match(line)
    if match:
        return match.group(1) + "\\" + line[match.end(1) :]
    return line


def _code_span(source: str) -> str:
    """`source` as a Markdown code span, whatever backticks it contains."""
    runs = [len(run) for run in re.findall(r"`+", source)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if source.startswith("`") or source.endswith("`") else ""
    return f"{fence}{pad}{source}{pad}{fence}"


@functools.lru_cache(maxsize=512)
def _convert(source: str, is_display: bool) -> str | None:
    """The formula as text (with bold markers), or None if it cannot be converted."""
    try:
        return latex_to_text(source, is_display=is_display)
    except UnsupportedLatex:
        return None


# ---------------------------------------------------------------------------------------------
# The scan


class _Held(Exception):
    """The rest of the text is not decided yet (streaming)."""


@dataclass
class _Converter:
    """One left-to-right pass over the Markdown, copying text and converting formulas."""

    text: str
    is_complete: bool
    out: list[str] = field(default_factory=list)
    num_bold_runs: int = 0  # '**' runs since the paragraph began: odd = inside bold
    break_prefix: str | None = None  # after display math: what starts the next line

    def run(self) -> str:
        pos = 0
        try:
            for block in _code_blocks(self.text):
                self._scan(pos, block.start)
                if block.is_unsure and not self.is_complete:
                    self._copy_until_special(block.start)
                self.out.append(self.text[block.start : block.end])
                self.break_prefix = None
                self.num_bold_runs = 0
                pos = block.end
            self._scan(pos, len(self.text))
        except _Held:
            pass
        return "".join(self.out)

    # Text ------------------------------------------------------------------------------------

    def _scan(self, start: int, end: int) -> None:
        pos = start
        while pos < end:
            match = _SPECIAL.search(self.text, pos, end)
            if match is None:
                self._copy(pos, end)
                return
            self._copy(pos, match.start())
            pos = match.start()
            char = self.text[pos]
            if char == "`":
                pos = self._backticks(pos, end)
            elif char == "\\":
                pos = self._backslash(pos, end)
            else:
                pos = self._dollar(pos, end)

    def _copy(self, start: int, end: int, *, is_code: bool = False) -> None:
        """Copy source text unchanged (after the line break a display formula may need)."""
        chunk = self.text[start:end]
        if not chunk:
            return
        if self.break_prefix is not None:
            rest = chunk.lstrip(" \t")
            if not rest:
                return
            if not rest.startswith(("\n", "\r")):
                rest = "\n" + self.break_prefix + _guard_line_start(rest)
            self.break_prefix = None
            chunk = rest
        if not is_code:
            self._count_bold(chunk)
        self.out.append(chunk)

    def _count_bold(self, chunk: str) -> None:
        blanks = list(_BLANK_LINE.finditer(chunk))
        if blanks:
            self.num_bold_runs = 0
            chunk = chunk[blanks[-1].end() :]
        self.num_bold_runs += len(_BOLD_RUN.findall(chunk))

    def _emit(self, text: str) -> None:
        self._copy_break()
        self.out.append(text)

    def _copy_break(self) -> None:
        if self.break_prefix is not None:
            self.out.append("\n" + self.break_prefix)
            self.break_prefix = None

    def _limit(self, pos: int, end: int) -> int:
        """Where a construct starting at `pos` must end: a blank line or a code block."""
        blank = _BLANK_LINE.search(self.text, pos, end)
        return blank.start() if blank else end

    def _is_open(self, limit: int) -> bool:
        """Can text still arrive before `limit` (so a construct reaching it is undecided)?"""
        return not self.is_complete and limit == len(self.text)

    def _copy_until_special(self, pos: int) -> None:
        """Hold an undecided code span (or fence) at `pos`: up to the next \\ or $ the text
        is shown unchanged whatever it turns out to be; from there on it waits."""
        special = _MATH_START.search(self.text, pos)
        self._copy(pos, special.start() if special else len(self.text), is_code=True)
        raise _Held

    # Constructs -----------------------------------------------------------------------------

    def _backticks(self, pos: int, end: int) -> int:
        run = re.match(r"`+", self.text[pos:end]).group()
        limit = self._limit(pos, end)
        closer = re.compile(rf"(?<!`){run}(?!`)")
        found = closer.search(self.text, pos + len(run), limit)
        if found and not (found.end() == len(self.text) and self._is_open(limit)):
            self._copy(pos, found.end(), is_code=True)
            return found.end()
        if self._is_open(limit):
            self._copy_until_special(pos)
        self._copy(pos, pos + len(run))
        return pos + len(run)

    def _backslash(self, pos: int, end: int) -> int:
        if pos + 1 >= end:
            if self._is_open(end):
                raise _Held
            self._copy(pos, pos + 1)
            return pos + 1
        char = self.text[pos + 1]
        if char in "([":
            return self._delimited(pos, end, closer="\\)" if char == "(" else "\\]")
        if char in ")]":
            self._emit("\\" + self.text[pos : pos + 2])  # a stray closer stays visible
            return pos + 2
        self._copy(pos, pos + 2)  # a Markdown escape (\*, \$, \\) as written
        return pos + 2

    def _delimited(self, pos: int, end: int, *, closer: str) -> int:
        """\\( … \\) or \\[ … \\]."""
        limit = self._limit(pos, end)
        i = pos + 2
        while (i := self.text.find("\\", i, limit)) >= 0:
            if self.text.startswith(closer, i) and i + 2 <= limit:
                if self.text[pos + 2 : i].strip():
                    self._formula(pos, pos + 2, i, is_display=closer == "\\]")
                    return i + 2
                break
            i += 2
        else:
            if self._is_open(limit):
                raise _Held
        self._emit("\\" + self.text[pos : pos + 2])  # not a formula: keep the delimiter visible
        return pos + 2

    def _dollar(self, pos: int, end: int) -> int:
        limit = self._limit(pos, end)
        if pos + 1 >= limit:
            if self._is_open(limit):
                raise _Held
            self._copy(pos, pos + 1)
            return pos + 1
        if self.text[pos + 1] == "$":
            return self._display_dollars(pos, limit)
        return self._inline_dollar(pos, limit)

    def _display_dollars(self, pos: int, limit: int) -> int:
        i = pos + 2
        while i < limit - 1:
            if self.text[i] == "\\":
                i += 2
                continue
            if self.text.startswith("$$", i):
                if not self.text[pos + 2 : i].strip():
                    break
                self._formula(pos, pos + 2, i, is_display=True)
                return i + 2
            i += 1
        else:
            if self._is_open(limit):
                raise _Held
        self._copy(pos, pos + 2)
        return pos + 2

    def _inline_dollar(self, pos: int, limit: int) -> int:
        text = self.text
        if text[pos + 1].isspace():
            self._copy(pos, pos + 1)
            return pos + 1
        price = _PRICE.match(text, pos + 1, limit)
        if price is not None:
            if price.end() == len(text) and self._is_open(limit):
                raise _Held  # "$5" could still become "$5$"
            self._copy(pos, pos + 1)
            return pos + 1
        line_end = text.find("\n", pos, limit)
        line_end = limit if line_end < 0 else line_end
        i = pos + 1
        while i < line_end:
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == "$":
                break
            i += 1
        else:
            if line_end == limit and self._is_open(limit):
                raise _Held
            self._copy(pos, pos + 1)
            return pos + 1
        if i + 1 == len(text) and self._is_open(limit):
            raise _Held  # what follows the closing $ decides whether it closes
        after = text[i + 1] if i + 1 < len(text) else ""
        if text[i - 1].isspace() or after.isalnum():
            self._copy(pos, pos + 1)  # not a closing $: this one is literal
            return pos + 1
        self._formula(pos, pos + 1, i, is_display=False)
        return i + 1

    # Output ---------------------------------------------------------------------------------

    def _formula(self, pos: int, start: int, end: int, *, is_display: bool) -> None:
        """Replace the formula text[start:end] (its opening delimiter at `pos`)."""
        line_start = max(self.text.rfind("\n", 0, pos), self.text.rfind("\r", 0, pos)) + 1
        before = self.text[line_start:pos]
        container = _CONTAINER.match(before).group()
        at_line_start = len(container) == len(before) or self.break_prefix is not None
        prefix = _LIST_MARKER.sub(lambda m: " " * len(m.group()), container)
        source = self.text[start:end]
        if ">" in container:  # a formula inside a quote: its lines carry '>' markers too
            source = re.sub(r"\n[ \t]*(?:>[ \t]?)+", "\n", source)
        self._copy_break()
        converted = _convert(source, is_display)
        if converted is None:
            lines, guard = _fallback(source, is_display=is_display), _unchanged
        else:
            if (
                not is_display
                and converted.startswith(BOLD_OPEN)
                and self._is_glued_bold(converted)
            ):
                converted = " " + converted
            lines = [self._bold(_escape(line)) for line in converted.split("\n")]
            guard = _guard_line_start
        if not lines:
            return
        if is_display and not at_line_start:
            self.out.append("\n" + prefix)
            at_line_start = True
        first = guard(lines[0]) if at_line_start else lines[0]
        self.out.append("\n".join([first, *(prefix + guard(line) for line in lines[1:])]))
        if is_display:
            self.break_prefix = prefix

    def _is_glued_bold(self, converted: str) -> bool:
        """Would '**' sit between a letter and punctuation ("is**(1, 2)**": not bold)?"""
        last = next((chunk[-1] for chunk in reversed(self.out) if chunk), "")
        return last.isalnum() and not converted[1:2].isalnum()

    def _bold(self, line: str) -> str:
        # Inside **…** already: a boxed answer is bold anyway, and '**' would end the bold.
        marker = "" if self.num_bold_runs % 2 else "**"
        return line.replace(BOLD_OPEN, marker).replace(BOLD_CLOSE, marker)


def _fallback(source: str, *, is_display: bool) -> list[str]:
    """The source of a formula that could not be converted, as code (a span or a block)."""
    lines = [line.strip() for line in source.strip().splitlines() if line.strip()]
    if is_display and len(lines) > 1:
        runs = [len(run) for run in re.findall(r"`{3,}", source)]
        fence = "`" * max(3, max(runs, default=0) + 1)
        return [f"{fence}latex", *lines, fence]
    return [_code_span(" ".join(lines))]


def _unchanged(line: str) -> str:
    return line
