"""The parser's command handlers: fractions, roots, fonts, accents, environments, ..."""

from __future__ import annotations

from bot.render.latex_pieces import (
    BOLD_CLOSE,
    BOLD_OPEN,
    Piece,
    Token,
    UnsupportedLatex,
    is_simple,
    is_term,
    script_text,
    tidy_text,
)
from bot.render.latex_vocabulary import (
    ACCENTS,
    ALIGN_ENVIRONMENTS,
    CASES_ENVIRONMENTS,
    EM_SPACE,
    EVERY_CHAR_ACCENTS,
    FONT_TABLES,
    MATRIX_DELIMITERS,
    NEGATED,
    ROOTS,
    SUBSCRIPTS,
    SUPERSCRIPTS,
    TEXT_COMMANDS,
    UNICODEIT,
    VULGAR_FRACTIONS,
    symbol_for,
)


class LatexCommands:
    """One method per LaTeX command family, mixed into the parser (bot/render/latex.py), whose
    reading methods (`_argument`, `_next`, `_rows`, ...) they use."""

    def _fraction(self, _: str) -> Piece:
        numerator = self._argument().strip()
        denominator = self._argument().strip()
        sign, digits = (numerator[:1], numerator[1:]) if numerator[:1] in "-−" else ("", numerator)
        vulgar = VULGAR_FRACTIONS.get((digits, denominator))
        if vulgar is not None:
            return Piece(sign + vulgar)
        top = numerator if is_term(numerator) or is_term(digits) else f"({numerator})"
        bottom = denominator if is_simple(denominator) else f"({denominator})"
        return Piece(f"{top}/{bottom}", "frac")

    def _binomial(self, _: str) -> Piece:
        top = self._argument().strip()
        bottom = self._argument().strip()
        return Piece(f"C({top}, {bottom})")

    def _boxed(self, _: str) -> Piece:
        inner = tidy_text(self._argument(), is_display=self._is_display)
        inner = inner.replace(BOLD_OPEN, "").replace(BOLD_CLOSE, "")
        return Piece(f"{BOLD_OPEN}{inner}{BOLD_CLOSE}" if inner else "", "boxed")

    def _text(self, _: str) -> Piece:
        return Piece(
            self._text_mode(self._raw_group()) if self._peek_group() else self._atom().text
        )

    def _peek_group(self) -> bool:
        self._skip_spaces()
        return self._peek() == Token("char", "{")

    def _text_mode(self, tokens: list[Token]) -> str:
        """Text inside \\text{...}: spaces count, $...$ switches back to math."""
        out: list[str] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if token.kind == "space":
                out.append(" ")
            elif token.kind == "char":
                if token.value == "$":
                    end = tokens.index(token, i) if token in tokens[i:] else -1
                    if end < 0:
                        raise UnsupportedLatex("unclosed $ inside \\text")
                    out.append(self._render_tokens(tokens[i:end]))
                    i = end + 1
                elif token.value not in "{}":
                    out.append(" " if token.value == "~" else token.value)
            elif token.value in TEXT_COMMANDS:
                continue  # \text{\textbf{x}}: the group that follows is read as text anyway
            else:
                symbol = symbol_for(token.value)
                if symbol is None:
                    raise UnsupportedLatex(f"unknown command \\{token.value} in text")
                out.append(symbol)
        return "".join(out)

    def _plain_font(self, name: str) -> Piece:
        return Piece(self._argument(), "func" if name in ("operatorname", "mathop") else "ord")

    def _font(self, name: str) -> Piece:
        table = FONT_TABLES[name]
        text = self._argument()
        return Piece("".join(UNICODEIT.get(f"\\{table}{{{ch}}}", ch) for ch in text))

    def _accent(self, name: str) -> Piece:
        mark = ACCENTS[name]
        text = self._argument().strip()
        if not text:
            return Piece("")
        if name in EVERY_CHAR_ACCENTS:
            return Piece("".join(ch + mark if not ch.isspace() else ch for ch in text))
        return Piece(text + mark)

    def _delimiter(self, _: str) -> Piece:
        self._skip_spaces()
        token = self._next()
        if token.kind == "char":
            return Piece("" if token.value == "." else token.value)
        symbol = symbol_for(token.value)
        if symbol is None:
            raise UnsupportedLatex(f"unknown delimiter \\{token.value}")
        return Piece(symbol)

    def _skip_argument(self, _: str) -> Piece:
        self._raw_group()
        return Piece("")

    def _space_argument(self, _: str) -> Piece:
        self._raw_group()
        return Piece(" ", "space")

    def _stacked(self, name: str) -> Piece:
        annotation = self._argument()
        base = self._argument()
        if name == "underset":
            return Piece(base + script_text(annotation, SUBSCRIPTS, "_"), "rel")
        return Piece(base + script_text(annotation, SUPERSCRIPTS, "^"), "rel")

    def _long_arrow(self, name: str) -> Piece:
        below = self._optional_tokens()
        above = self._argument()
        arrow = {"xrightarrow": "→", "xleftarrow": "←", "xRightarrow": "⇒"}[name]
        text = arrow + script_text(above, SUPERSCRIPTS, "^")
        if below:
            text += script_text(self._render_tokens(below), SUBSCRIPTS, "_")
        return Piece(text, "rel")

    def _brace(self, _: str) -> Piece:
        return Piece(self._argument())

    def _root(self, _: str) -> Piece:
        self._skip_spaces()
        index_tokens = self._optional_tokens()
        radicand = self._argument().strip()
        body = radicand if is_simple(radicand) else f"({radicand})"
        if index_tokens is None:
            return Piece("√" + body)
        index = "".join(self._render_tokens(index_tokens).split())
        sign = ROOTS.get(index)
        if sign is None:
            sign = script_text(index, SUPERSCRIPTS, "^").removeprefix("^") + "√"
        return Piece(sign + body)

    def _negation(self, _: str) -> Piece:
        self._skip_spaces()
        negated = self._atom()
        text = negated.text.strip()
        return Piece(NEGATED.get(text) or text + "\u0338", "rel")

    def _pmod(self, _: str) -> Piece:
        return Piece(f" (mod {self._argument().strip()})")

    def _tag(self, _: str) -> Piece:
        return Piece(f"{EM_SPACE}({self._text_mode(self._raw_group())})")

    def _textcolor(self, _: str) -> Piece:
        self._raw_group()
        return Piece(self._argument())

    # Environments ---------------------------------------------------------------------------

    def _environment(self, _: str) -> Piece:
        name = self._group_word()
        if name == "array" or name.startswith("alignat") or name == "alignedat":
            self._raw_group()  # column spec / number of columns
        kind = self._environment_kind(name)
        rows = [row for row in self._rows(environment=name) if any(c.strip() for c in row)]
        if not self._is_display:
            return Piece(self._inline_rows(rows, name, kind))
        text = self._lines(rows, kind, name)
        return Piece(text, "block" if "\n" in text else "ord")

    @staticmethod
    def _environment_kind(name: str) -> str:
        if name in ALIGN_ENVIRONMENTS:
            return "aligned"
        if name in CASES_ENVIRONMENTS:
            return "cases"
        if name in MATRIX_DELIMITERS:
            return "matrix"
        raise UnsupportedLatex(f"unknown environment {name}")

    @staticmethod
    def _cells(row: list[str], kind: str, separator: str) -> str:
        cells = [cell.strip() for cell in row]
        if kind == "aligned":
            # & alternates: x &= 1 is one equation; the next & starts a new column.
            return "".join(c + (EM_SPACE if i % 2 else " ") for i, c in enumerate(cells))
        if kind == "cases":
            return ", ".join(cell for cell in cells if cell)
        return separator.join(cells)

    def _lines(self, rows: list[list[str]], kind: str, name: str = "") -> str:
        lines = [self._cells(row, kind, EM_SPACE) for row in rows]
        if not self._is_display:
            return " ".join(lines)
        if kind == "cases":
            if len(lines) == 1:
                return "{ " + lines[0]
            marks = ["⎧"] + ["⎨" if len(lines) == 3 else "⎪"] * (len(lines) - 2) + ["⎩"]
            if len(lines) > 3:
                marks[len(lines) // 2] = "⎨"
            return "\n".join(f"{mark} {line}" for mark, line in zip(marks, lines, strict=True))
        if kind == "matrix":
            left, right, top, middle, bottom, rights = MATRIX_DELIMITERS[name]
            if len(lines) == 1:
                return f"{left}{lines[0]}{right}"
            out = []
            for i, line in enumerate(lines):
                edge = 0 if i == 0 else 2 if i == len(lines) - 1 else 1
                out.append(f"{(top, middle, bottom)[edge]}{line}{rights[edge : edge + 1]}")
            return "\n".join(out)
        return "\n".join(lines)

    def _inline_rows(self, rows: list[list[str]], name: str, kind: str) -> str:
        if kind == "cases":
            return "{ " + "; ".join(self._cells(row, kind, ", ") for row in rows) + " }"
        body = "; ".join(self._cells(row, kind, ", ") for row in rows)
        if kind == "matrix":
            left, right = MATRIX_DELIMITERS[name][:2]
            return f"{left}{body}{right}"
        return body
