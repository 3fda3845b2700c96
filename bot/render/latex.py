"""One LaTeX math formula -> readable Unicode text (Greek, sub/superscripts, a/b, √, rows).

The vocabulary (4,000+ symbol commands, the Unicode sub/superscript letters, math alphabets
such as \\mathbb, combining accents) comes from unicodeit's tables; the layout (fractions,
roots, scripts, environments, spacing) is done here by a small recursive-descent parser, so
that anything it does not know raises `UnsupportedLatex` instead of being silently mangled.
See bot/render/math.py for why unicodeit, and for where formulas are found in Markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.render.latex_commands import LatexCommands
from bot.render.latex_pieces import (
    BOLD_CLOSE,
    BOLD_OPEN,
    Piece,
    Token,
    UnsupportedLatex,
    join_pieces,
    script_text,
    tidy_text,
    tokenize,
)
from bot.render.latex_vocabulary import (
    ACCENTS,
    BIG_OPERATORS,
    FONT_TABLES,
    FUNCTIONS,
    IGNORED,
    LIMIT_FUNCTIONS,
    PLAIN_FONTS,
    RELATIONS,
    SKIP_ONE_ARGUMENT,
    SUBSCRIPTS,
    SUPERSCRIPTS,
    TEXT_COMMANDS,
    is_letter_like,
    symbol_for,
)


def latex_to_text(source: str, *, is_display: bool) -> str:
    """The formula `source` (without delimiters) as plain Unicode text.

    Display formulas may span lines (aligned rows, matrices, cases); inline ones are one line.
    Raises UnsupportedLatex for unknown commands, unbalanced braces and the like.
    """
    if BOLD_OPEN in source or BOLD_CLOSE in source:
        raise UnsupportedLatex("private marker character in the formula")
    if _nesting_depth(source) > _MAX_NESTING:
        raise UnsupportedLatex("braces nested too deeply")
    parser = _Parser(tokenize(source), is_display=is_display)
    return tidy_text(parser.formula(), is_display=is_display)


_MAX_NESTING = 40  # the parser recurses per brace; real formulas stay far below this


def _nesting_depth(source: str) -> int:
    depth = deepest = 0
    for ch in source:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth -= 1
    return deepest


# ---------------------------------------------------------------------------------------------
# Parser


_ROW_BREAK = Token("cmd", "\\")


class _Parser(LatexCommands):
    """Recursive descent over the tokens of one formula; each method renders what it reads."""

    def __init__(self, tokens: list[Token], *, is_display: bool) -> None:
        self._tokens = tokens
        self._pos = 0
        self._is_display = is_display
        self._handlers: Mapping[str, Callable[[str], Piece]] = {
            **dict.fromkeys(("frac", "dfrac", "tfrac", "cfrac"), self._fraction),
            **dict.fromkeys(("binom", "dbinom", "tbinom"), self._binomial),
            **dict.fromkeys(("boxed", "fbox", "framebox"), self._boxed),
            **dict.fromkeys(TEXT_COMMANDS, self._text),
            **dict.fromkeys(PLAIN_FONTS, self._plain_font),
            **dict.fromkeys(FONT_TABLES, self._font),
            **dict.fromkeys(ACCENTS, self._accent),
            **dict.fromkeys(("left", "right", "bigl", "bigr", "Bigl", "Bigr"), self._delimiter),
            **dict.fromkeys(SKIP_ONE_ARGUMENT, self._skip_argument),
            **dict.fromkeys(("overset", "stackrel", "underset"), self._stacked),
            **dict.fromkeys(("xrightarrow", "xleftarrow", "xRightarrow"), self._long_arrow),
            **dict.fromkeys(("underbrace", "overbrace"), self._brace),
            "sqrt": self._root,
            "begin": self._environment,
            "not": self._negation,
            "pmod": self._pmod,
            "hspace": self._space_argument,
            "tag": self._tag,
            "textcolor": self._textcolor,
        }

    # Token access ---------------------------------------------------------------------------

    def _peek(self) -> Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _next(self) -> Token:
        token = self._peek()
        if token is None:
            raise UnsupportedLatex("the formula ends too early")
        self._pos += 1
        return token

    def _skip_spaces(self) -> None:
        while (token := self._peek()) is not None and token.kind == "space":
            self._pos += 1

    @staticmethod
    def _is_stop(token: Token | None) -> bool:
        if token is None:
            return True
        if token.kind == "char":
            return token.value in ("}", "&")
        return token.kind == "cmd" and token.value in ("\\", "end")

    # Structure ------------------------------------------------------------------------------

    def formula(self) -> str:
        rows = self._rows(environment=None)
        if self._peek() is not None:
            raise UnsupportedLatex(f"unexpected {self._peek()}")
        return self._lines(rows, "aligned")

    def _rows(self, environment: str | None) -> list[list[str]]:
        """Cells (split at &) of rows (split at \\\\) up to \\end{environment} or the end."""
        rows: list[list[str]] = []
        cells: list[str] = []
        while True:
            cells.append(join_pieces(self._sequence()))
            token = self._peek()
            if token is None:
                if environment is not None:
                    raise UnsupportedLatex(f"\\begin{{{environment}}} is not closed")
                rows.append(cells)
                return rows
            self._pos += 1
            if token == Token("char", "&"):
                continue
            if token == _ROW_BREAK:
                self._skip_spaces()
                self._optional_tokens()  # \\[4pt]
                rows.append(cells)
                cells = []
                continue
            if token == Token("cmd", "end"):
                name = self._group_word()
                if name != environment:
                    raise UnsupportedLatex(f"\\end{{{name}}} does not close {environment}")
                rows.append(cells)
                return rows
            raise UnsupportedLatex("unbalanced braces")

    def _sequence(self) -> list[Piece]:
        pieces: list[Piece] = []
        while not self._is_stop(self._peek()):
            pieces.append(self._item())
        return pieces

    def _item(self) -> Piece:
        """An atom with its sub/superscripts."""
        token = self._peek()
        if token is not None and token.kind == "space":
            self._pos += 1
            return Piece(" ", "space")
        base = self._atom()
        while self._peek() in (Token("cmd", "limits"), Token("cmd", "nolimits")):
            self._pos += 1
        subscript = superscript = None
        while (token := self._peek()) is not None and token.kind == "char" and token.value in "^_":
            self._pos += 1
            argument = self._argument(in_script=True)
            if token.value == "^":
                if superscript is not None:
                    raise UnsupportedLatex("double superscript")
                superscript = argument
            else:
                if subscript is not None:
                    raise UnsupportedLatex("double subscript")
                subscript = argument
        if subscript is None and superscript is None:
            return base
        text = base.text
        if base.kind == "frac":
            text = f"({text})"
        if subscript is not None:
            text += script_text(subscript, SUBSCRIPTS, "_")
        if superscript is not None:
            text += script_text(superscript, SUPERSCRIPTS, "^")
        return Piece(text, base.kind if base.kind in ("func", "limits", "boxed") else "ord")

    def _atom(self) -> Piece:
        token = self._next()
        if token.kind == "char":
            if token.value == "{":
                return Piece(self._group_rest())
            if token.value in "^_":  # a script with no base: x^{}_{} style; attach to nothing
                self._pos -= 1
                return Piece("")
            return Piece(" " if token.value == "~" else token.value)
        return self._command(token.value)

    def _command(self, name: str) -> Piece:
        handler = self._handlers.get(name)
        if handler is not None:
            return handler(name)
        if name in IGNORED:
            return Piece("")
        if name in FUNCTIONS or name in LIMIT_FUNCTIONS:
            if name in ("mod", "bmod"):
                return Piece(" mod ")
            return Piece(name, "limits" if name in LIMIT_FUNCTIONS else "func")
        symbol = symbol_for(name)
        if symbol is None:
            raise UnsupportedLatex(f"unknown command \\{name}")
        if name in BIG_OPERATORS:
            return Piece(symbol, "limits")
        if name in RELATIONS:
            return Piece(symbol, "rel")
        if not symbol.strip():
            return Piece(symbol, "space")
        if is_letter_like(symbol):
            self._skip_terminating_space()
        return Piece(symbol)

    def _skip_terminating_space(self) -> None:
        """\\Delta x is Δx: the space only ends the command name (but \\alpha + b keeps it)."""
        following = self._tokens[self._pos + 1] if self._pos + 1 < len(self._tokens) else None
        if (
            self._peek() == Token("space", " ")
            and following is not None
            and following.kind == "char"
            and following.value.isalnum()
        ):
            self._pos += 1

    # Arguments ------------------------------------------------------------------------------

    def _argument(self, *, in_script: bool = False) -> str:
        """A mandatory argument: a {group} or a single token, rendered."""
        self._skip_spaces()
        token = self._peek()
        if self._is_stop(token) or (token.kind == "char" and token.value in "^_"):
            raise UnsupportedLatex("missing argument")
        if token.kind == "char" and token.value == "{":
            self._pos += 1
            return self._group_rest(in_script=in_script)
        return self._atom().text

    def _group_rest(self, *, in_script: bool = False) -> str:
        """The rest of a {group} whose '{' was read."""
        pieces = self._sequence()
        if self._next() != Token("char", "}"):
            raise UnsupportedLatex("unbalanced braces or a row break inside a group")
        return join_pieces(pieces, in_script=in_script)

    def _raw_group(self) -> list[Token]:
        """The tokens of a {group}, unrendered (for text mode and names)."""
        self._skip_spaces()
        if self._next() != Token("char", "{"):
            raise UnsupportedLatex("expected {")
        depth = 1
        start = self._pos
        while True:
            token = self._next()
            if token.kind == "char" and token.value == "{":
                depth += 1
            elif token.kind == "char" and token.value == "}":
                depth -= 1
                if depth == 0:
                    return self._tokens[start : self._pos - 1]

    def _group_word(self) -> str:
        return "".join(
            token.value if token.kind != "cmd" else "\\" + token.value
            for token in self._raw_group()
        ).strip()

    def _optional_tokens(self) -> list[Token] | None:
        """An optional [argument], unrendered."""
        if self._peek() != Token("char", "["):
            return None
        self._pos += 1
        start = self._pos
        while self._next() != Token("char", "]"):
            pass
        return self._tokens[start : self._pos - 1]

    def _render_tokens(self, tokens: list[Token]) -> str:
        inner = _Parser(tokens, is_display=False)
        pieces = inner._sequence()
        if inner._peek() is not None:
            raise UnsupportedLatex("unexpected token in an optional argument")
        return join_pieces(pieces)
