"""One LaTeX math formula -> readable Unicode text (Greek, sub/superscripts, a/b, √, rows).

The vocabulary (4,000+ symbol commands, the Unicode sub/superscript letters, math alphabets
such as \\mathbb, combining accents) comes from unicodeit's tables; the layout (fractions,
roots, scripts, environments, spacing) is done here by a small recursive-descent parser, so
that anything it does not know raises `UnsupportedLatex` instead of being silently mangled.
See bot/render/math.py for why unicodeit, and for where formulas are found in Markdown.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from unicodeit.data import COMBININGMARKS, REPLACEMENTS, SUBSUPERSCRIPTS

# \boxed{...} is marked with these (private-use characters) so that the Markdown layer can
# make it bold after escaping the rest; a source containing them is rejected.
BOLD_OPEN = "\ue000"
BOLD_CLOSE = "\ue001"

_EM_SPACE = "\u2003"  # \quad, and gaps between matrix cells: kept when spaces are tidied


class UnsupportedLatex(ValueError):
    """The formula uses something this converter cannot show faithfully."""


def latex_to_text(source: str, *, is_display: bool) -> str:
    """The formula `source` (without delimiters) as plain Unicode text.

    Display formulas may span lines (aligned rows, matrices, cases); inline ones are one line.
    Raises UnsupportedLatex for unknown commands, unbalanced braces and the like.
    """
    if BOLD_OPEN in source or BOLD_CLOSE in source:
        raise UnsupportedLatex("private marker character in the formula")
    if _nesting_depth(source) > _MAX_NESTING:
        raise UnsupportedLatex("braces nested too deeply")
    parser = _Parser(_tokenize(source), is_display=is_display)
    return _tidy(parser.formula(), is_display=is_display)


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
# Vocabulary


def _sub_super_maps() -> tuple[Mapping[str, str], Mapping[str, str]]:
    subs: dict[str, str] = {}
    sups: dict[str, str] = {}
    for key, value in SUBSUPERSCRIPTS:
        # unicodeit maps a few to look-alikes from other scripts (^V to a Hangul letter).
        name = unicodedata.name(value, "")
        if not any(
            word in name
            for word in (
                "SUPERSCRIPT",
                "SUBSCRIPT",
                "MODIFIER LETTER SMALL",
                "MODIFIER LETTER CAPITAL",
            )
        ):
            continue
        (subs if key[0] == "_" else sups).setdefault(key[1:], value)
    subs["−"] = subs["-"]
    sups["−"] = sups["-"]
    return MappingProxyType(subs), MappingProxyType(sups)


_SUBSCRIPTS, _SUPERSCRIPTS = _sub_super_maps()
_UNICODEIT = MappingProxyType(dict(REPLACEMENTS))
_SYMBOL_KEY = re.compile(r"\\(?:[A-Za-z]+|[^A-Za-z])")

# Where unicodeit's choice is worse for chat (a CJK bracket, '*' for \star) or missing.
_SYMBOL_OVERRIDES = MappingProxyType(
    {
        "cdot": "·",
        "cdotp": "·",
        "centerdot": "·",
        "star": "⋆",
        "langle": "⟨",
        "rangle": "⟩",
        "lvert": "|",
        "rvert": "|",
        "vert": "|",
        "lVert": "‖",
        "rVert": "‖",
        "Vert": "‖",
        "|": "‖",
        "dots": "…",
        "dotsc": "…",
        "dotsb": "⋯",
        "dotsm": "⋯",
        "ldots": "…",
        "colon": ":",
        "degree": "°",
        "textdegree": "°",
        "implies": "⟹",
        "impliedby": "⟸",
        "iff": "⟺",
        "lbrace": "{",
        "rbrace": "}",
        "lbrack": "[",
        "rbrack": "]",
        "backslash": "\\",
        "square": "□",
        "qed": "∎",
        "{": "{",
        "}": "}",
        "%": "%",
        "$": "$",
        "&": "&",
        "#": "#",
        "_": "_",
        ",": " ",
        ":": " ",
        ";": " ",
        ">": " ",
        " ": " ",
        "!": "",
        "quad": _EM_SPACE,
        "qquad": _EM_SPACE * 2,
        "enspace": " ",
        "thinspace": " ",
        "medspace": " ",
        "thickspace": " ",
        "negthinspace": "",
        "prime": "′",
        "emptyset": "∅",
        "varnothing": "∅",
    }
)


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


_FUNCTIONS = _names(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth sech csch log ln lg exp "
    "det gcd deg dim ker hom arg Pr mod bmod"
)
# Operators whose sub/superscripts are limits: a space separates them from what follows.
_LIMIT_FUNCTIONS = _names("lim liminf limsup max min sup inf argmax argmin")
_BIG_OPERATORS = _names(
    "sum prod coprod int iint iiint oint bigcup bigcap bigoplus bigotimes bigvee bigwedge"
)
_RELATIONS = _names(
    "le leq ge geq ne neq approx equiv sim simeq cong propto to gets rightarrow leftarrow "
    "Rightarrow Leftarrow implies impliedby iff Leftrightarrow leftrightarrow longrightarrow "
    "longleftarrow Longrightarrow Longleftarrow longleftrightarrow Longleftrightarrow mapsto "
    "in notin ni subset subseteq supset supseteq subsetneq supsetneq ll gg leqslant geqslant "
    "perp parallel models vdash"
)
_NEGATED = MappingProxyType(
    {"=": "≠", "<": "≮", ">": "≯", "∈": "∉", "≤": "≰", "≥": "≱", "⊂": "⊄", "⊆": "⊈", "≡": "≢"}
)
_IGNORED = _names(
    "displaystyle textstyle scriptstyle scriptscriptstyle limits nolimits nonumber notag "
    "big Big bigg Bigg bigl Bigl biggl Biggl bigr Bigr biggr Biggr bigm Bigm biggm Biggm "
    "hline middle relax allowbreak"
)
_SKIP_ONE_ARGUMENT = _names("phantom hphantom vphantom label vspace color")
_TEXT_COMMANDS = _names(
    "text textrm textnormal textbf textit textsf texttt textup textsc emph mbox hbox"
)
_PLAIN_FONTS = _names("mathrm mathit mathsf mathtt mathnormal mathop operatorname")
_FONT_TABLES = MappingProxyType(
    {
        "mathbf": "mathbf",
        "boldsymbol": "mathbf",
        "bm": "mathbf",
        "mathbold": "mathbf",
        "mathbb": "mathbb",
        "mathds": "mathbb",
        "mathcal": "mathcal",
        "mathscr": "mathcal",
        "mathfrak": "mathfrak",
    }
)
_ACCENTS = MappingProxyType(
    {
        **{name[1:]: mark for name, mark in COMBININGMARKS},
        "widehat": "\u0302",
        "widetilde": "\u0303",
        "overrightarrow": "\u20d7",
        "overleftarrow": "\u20d6",
        "mathring": "\u030a",
        "check": "\u030c",
        "cancel": "\u0336",
        "bcancel": "\u0336",
        "xcancel": "\u0336",
        "sout": "\u0336",
    }
)
_EVERY_CHAR_ACCENTS = _names("overline underline bar strikethrough cancel bcancel xcancel sout")
_VULGAR_FRACTIONS = MappingProxyType(
    {
        ("1", "2"): "½",
        ("1", "3"): "⅓",
        ("2", "3"): "⅔",
        ("1", "4"): "¼",
        ("3", "4"): "¾",
        ("1", "5"): "⅕",
        ("2", "5"): "⅖",
        ("3", "5"): "⅗",
        ("4", "5"): "⅘",
        ("1", "6"): "⅙",
        ("5", "6"): "⅚",
        ("1", "7"): "⅐",
        ("1", "8"): "⅛",
        ("3", "8"): "⅜",
        ("5", "8"): "⅝",
        ("7", "8"): "⅞",
        ("1", "9"): "⅑",
        ("1", "10"): "⅒",
    }
)
_ROOTS = MappingProxyType({"2": "√", "3": "∛", "4": "∜"})

_ALIGN_ENVIRONMENTS = _names(
    "aligned align align* alignat alignat* alignedat gathered gather gather* split equation "
    "equation* multline multline* eqnarray eqnarray* flalign flalign*"
)
_MATRIX_DELIMITERS = MappingProxyType(
    {
        "matrix": ("", "", "", "", "", ""),
        "smallmatrix": ("", "", "", "", "", ""),
        "array": ("", "", "", "", "", ""),
        "pmatrix": ("(", ")", "⎛", "⎜", "⎝", "⎞⎟⎠"),
        "bmatrix": ("[", "]", "⎡", "⎢", "⎣", "⎤⎥⎦"),
        "Bmatrix": ("{", "}", "{", "{", "{", "}}}"),
        "vmatrix": ("|", "|", "|", "|", "|", "|||"),
        "Vmatrix": ("‖", "‖", "‖", "‖", "‖", "‖‖‖"),
    }
)
_CASES_ENVIRONMENTS = _names("cases dcases rcases")


def _is_letter_like(symbol: str) -> bool:
    """Greek letters, ∂, ∇ and the like: written next to what they apply to."""
    return len(symbol) == 1 and (unicodedata.category(symbol).startswith("L") or symbol in "∂∇∠△¬∡")


def _symbol(name: str) -> str | None:
    """The Unicode text of a symbol command (without the backslash), if known."""
    if name in _SYMBOL_OVERRIDES:
        return _SYMBOL_OVERRIDES[name]
    return _UNICODEIT.get("\\" + name)


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "cmd" (a command name, or one non-letter for control symbols), "space", "char"
    value: str


_TOKEN = re.compile(r"\\([A-Za-z]+)\*?|\\(.)|(\s+)|(.)", re.DOTALL)


def _tokenize(source: str) -> list[_Token]:
    if re.search(r"(?<!\\)(?:\\\\)*\\$", source):
        raise UnsupportedLatex("a lone backslash at the end")
    tokens = []
    for match in _TOKEN.finditer(source):
        name, symbol, space, char = match.groups()
        if name is not None:
            tokens.append(_Token("cmd", name))
        elif symbol is not None:
            tokens.append(_Token("cmd", " " if symbol.isspace() else symbol))  # "\<newline>"
        elif space is not None:
            tokens.append(_Token("space", " "))
        else:
            tokens.append(_Token("char", char))
    return tokens


# ---------------------------------------------------------------------------------------------
# Pieces and how they join


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    kind: str = "ord"  # ord, space, rel, func, limits (a function/operator with limits), frac,
    # boxed, block (several lines)


_OPERATOR_CHARS = frozenset("+-−±∓=<>≤≥≠≈×·÷/,;:→←⇒⇔⟹⟺|∣∈∉⊂⊆∪∩∧∨")
_SUPER_OR_SUB = frozenset(_SUPERSCRIPTS.values()) | frozenset(_SUBSCRIPTS.values())


def _top_level_chars(text: str) -> list[str] | None:
    """The characters outside brackets, or None if the brackets do not balance."""
    depth = 0
    out = []
    for ch in text:
        if ch in "([{⟨":
            depth += 1
        elif ch in ")]}⟩":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0:
            out.append(ch)
    return out if depth == 0 else None


def _is_term(text: str) -> bool:
    """A product-like term that needs no parentheses before '/' (2π, n(n+1), x²)."""
    chars = _top_level_chars(text)
    if not text or chars is None:
        return False
    return not any(ch.isspace() or ch in _OPERATOR_CHARS for ch in chars)


_SIMPLE = re.compile(r"[√∂∇]?(?:\d+(?:\.\d+)?|[^\W\d_]+[′']*|\S)")


def _is_simple(text: str) -> bool:
    """A single number, symbol or word: safe after '/' or '√' without parentheses."""
    if _SIMPLE.fullmatch(text):
        return True
    if text[:1] == "(" and text[-1:] == ")" and _top_level_chars(text[1:-1]) is not None:
        return True
    body = text.rstrip("".join(_SUPER_OR_SUB) + "′'")
    if body != text and body and _SIMPLE.fullmatch(body):
        return True
    # f(x), sin(x): a name applied to a bracketed argument
    match = re.fullmatch(r"[^\W\d_]+(\(.*\))", text)
    return bool(match and _top_level_chars(match.group(1)[1:-1]) is not None)


def _script(text: str, table: Mapping[str, str], marker: str) -> str:
    """A subscript or superscript: Unicode if every character has one, else _x or ^(x+1)."""
    text = "".join(text.split())
    if not text:
        return ""
    if marker == "^" and text in ("∘", "°"):
        return "°"
    if marker == "^" and text in ("′", "'", "″", "′′", "*", "†", "‡"):
        return text
    if all(ch in table for ch in text):
        return "".join(table[ch] for ch in text)
    if len(text) == 1 or text.isdigit():
        return marker + text
    return f"{marker}({text})"


def _join(pieces: list[_Piece], *, in_script: bool = False) -> str:
    """Concatenate pieces with the spacing a reader expects."""
    out: list[str] = []
    for i, piece in enumerate(pieces):
        text = piece.text
        after = pieces[i + 1] if i + 1 < len(pieces) else None
        before = pieces[i - 1] if i > 0 else None
        if piece.kind == "frac" and after is not None and after.text[:1].isalnum():
            text = f"({text})"  # a/b c would read as a/(bc)
        if piece.kind == "rel" and not in_script:
            text = f" {text} "
        if piece.kind == "boxed" and text:
            # '**' next to a letter and a symbol is not emphasis in Markdown: keep them apart.
            if before is not None and before.text[-1:].isalnum() and not text[1:2].isalnum():
                text = " " + text
            if after is not None and after.text[:1].isalnum() and not text[-2:-1].isalnum():
                text = text + " "
        if before is not None and not in_script and before.kind in ("func", "limits"):
            is_limits_gap = before.kind == "limits" and piece.kind not in ("space", "rel")
            if is_limits_gap or text[:1].isalnum():
                text = " " + text
        if piece.kind == "block" and out and not "".join(out).endswith("\n"):
            text = "\n" + text
        out.append(text)
    return "".join(out)


def _tidy(text: str, *, is_display: bool) -> str:
    lines = []
    for line in text.split("\n"):
        line = re.sub(r" {2,}", " ", line.strip(" "))
        line = re.sub(rf" ?({_EM_SPACE}+) ?", r"\1", line).strip()
        line = re.sub(r"(?<=[(\[{⌊⌈⟨]) | (?=[)\]}⌋⌉⟩])", "", line)  # \left( x \right) -> (x)
        if line:
            lines.append(line)
    return ("\n" if is_display else " ").join(lines)


# ---------------------------------------------------------------------------------------------
# Parser


_ROW_BREAK = _Token("cmd", "\\")


class _Parser:
    """Recursive descent over the tokens of one formula; each method renders what it reads."""

    def __init__(self, tokens: list[_Token], *, is_display: bool) -> None:
        self._tokens = tokens
        self._pos = 0
        self._is_display = is_display
        self._handlers: Mapping[str, Callable[[str], _Piece]] = {
            **dict.fromkeys(("frac", "dfrac", "tfrac", "cfrac"), self._fraction),
            **dict.fromkeys(("binom", "dbinom", "tbinom"), self._binomial),
            **dict.fromkeys(("boxed", "fbox", "framebox"), self._boxed),
            **dict.fromkeys(_TEXT_COMMANDS, self._text),
            **dict.fromkeys(_PLAIN_FONTS, self._plain_font),
            **dict.fromkeys(_FONT_TABLES, self._font),
            **dict.fromkeys(_ACCENTS, self._accent),
            **dict.fromkeys(("left", "right", "bigl", "bigr", "Bigl", "Bigr"), self._delimiter),
            **dict.fromkeys(_SKIP_ONE_ARGUMENT, self._skip_argument),
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

    def _peek(self) -> _Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise UnsupportedLatex("the formula ends too early")
        self._pos += 1
        return token

    def _skip_spaces(self) -> None:
        while (token := self._peek()) is not None and token.kind == "space":
            self._pos += 1

    @staticmethod
    def _is_stop(token: _Token | None) -> bool:
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
            cells.append(_join(self._sequence()))
            token = self._peek()
            if token is None:
                if environment is not None:
                    raise UnsupportedLatex(f"\\begin{{{environment}}} is not closed")
                rows.append(cells)
                return rows
            self._pos += 1
            if token == _Token("char", "&"):
                continue
            if token == _ROW_BREAK:
                self._skip_spaces()
                self._optional_tokens()  # \\[4pt]
                rows.append(cells)
                cells = []
                continue
            if token == _Token("cmd", "end"):
                name = self._group_word()
                if name != environment:
                    raise UnsupportedLatex(f"\\end{{{name}}} does not close {environment}")
                rows.append(cells)
                return rows
            raise UnsupportedLatex("unbalanced braces")

    def _sequence(self) -> list[_Piece]:
        pieces: list[_Piece] = []
        while not self._is_stop(self._peek()):
            pieces.append(self._item())
        return pieces

    def _item(self) -> _Piece:
        """An atom with its sub/superscripts."""
        token = self._peek()
        if token is not None and token.kind == "space":
            self._pos += 1
            return _Piece(" ", "space")
        base = self._atom()
        while self._peek() in (_Token("cmd", "limits"), _Token("cmd", "nolimits")):
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
            text += _script(subscript, _SUBSCRIPTS, "_")
        if superscript is not None:
            text += _script(superscript, _SUPERSCRIPTS, "^")
        return _Piece(text, base.kind if base.kind in ("func", "limits", "boxed") else "ord")

    def _atom(self) -> _Piece:
        token = self._next()
        if token.kind == "char":
            if token.value == "{":
                return _Piece(self._group_rest())
            if token.value in "^_":  # a script with no base: x^{}_{} style; attach to nothing
                self._pos -= 1
                return _Piece("")
            return _Piece(" " if token.value == "~" else token.value)
        return self._command(token.value)

    def _command(self, name: str) -> _Piece:
        handler = self._handlers.get(name)
        if handler is not None:
            return handler(name)
        if name in _IGNORED:
            return _Piece("")
        if name in _FUNCTIONS or name in _LIMIT_FUNCTIONS:
            if name in ("mod", "bmod"):
                return _Piece(" mod ")
            return _Piece(name, "limits" if name in _LIMIT_FUNCTIONS else "func")
        symbol = _symbol(name)
        if symbol is None:
            raise UnsupportedLatex(f"unknown command \\{name}")
        if name in _BIG_OPERATORS:
            return _Piece(symbol, "limits")
        if name in _RELATIONS:
            return _Piece(symbol, "rel")
        if not symbol.strip():
            return _Piece(symbol, "space")
        if _is_letter_like(symbol):
            self._skip_terminating_space()
        return _Piece(symbol)

    def _skip_terminating_space(self) -> None:
        """\\Delta x is Δx: the space only ends the command name (but \\alpha + b keeps it)."""
        following = self._tokens[self._pos + 1] if self._pos + 1 < len(self._tokens) else None
        if (
            self._peek() == _Token("space", " ")
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
        if self._next() != _Token("char", "}"):
            raise UnsupportedLatex("unbalanced braces or a row break inside a group")
        return _join(pieces, in_script=in_script)

    def _raw_group(self) -> list[_Token]:
        """The tokens of a {group}, unrendered (for text mode and names)."""
        self._skip_spaces()
        if self._next() != _Token("char", "{"):
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

    def _optional_tokens(self) -> list[_Token] | None:
        """An optional [argument], unrendered."""
        if self._peek() != _Token("char", "["):
            return None
        self._pos += 1
        start = self._pos
        while self._next() != _Token("char", "]"):
            pass
        return self._tokens[start : self._pos - 1]

    def _render_tokens(self, tokens: list[_Token]) -> str:
        inner = _Parser(tokens, is_display=False)
        pieces = inner._sequence()
        if inner._peek() is not None:
            raise UnsupportedLatex("unexpected token in an optional argument")
        return _join(pieces)

    # Commands -------------------------------------------------------------------------------

    def _fraction(self, _: str) -> _Piece:
        numerator = self._argument().strip()
        denominator = self._argument().strip()
        sign, digits = (numerator[:1], numerator[1:]) if numerator[:1] in "-−" else ("", numerator)
        vulgar = _VULGAR_FRACTIONS.get((digits, denominator))
        if vulgar is not None:
            return _Piece(sign + vulgar)
        top = numerator if _is_term(numerator) or _is_term(digits) else f"({numerator})"
        bottom = denominator if _is_simple(denominator) else f"({denominator})"
        return _Piece(f"{top}/{bottom}", "frac")

    def _binomial(self, _: str) -> _Piece:
        top = self._argument().strip()
        bottom = self._argument().strip()
        return _Piece(f"C({top}, {bottom})")

    def _boxed(self, _: str) -> _Piece:
        inner = _tidy(self._argument(), is_display=self._is_display)
        inner = inner.replace(BOLD_OPEN, "").replace(BOLD_CLOSE, "")
        return _Piece(f"{BOLD_OPEN}{inner}{BOLD_CLOSE}" if inner else "", "boxed")

    def _text(self, _: str) -> _Piece:
        return _Piece(
            self._text_mode(self._raw_group()) if self._peek_group() else self._atom().text
        )

    def _peek_group(self) -> bool:
        self._skip_spaces()
        return self._peek() == _Token("char", "{")

    def _text_mode(self, tokens: list[_Token]) -> str:
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
            elif token.value in _TEXT_COMMANDS:
                continue  # \text{\textbf{x}}: the group that follows is read as text anyway
            else:
                symbol = _symbol(token.value)
                if symbol is None:
                    raise UnsupportedLatex(f"unknown command \\{token.value} in text")
                out.append(symbol)
        return "".join(out)

    def _plain_font(self, name: str) -> _Piece:
        return _Piece(self._argument(), "func" if name in ("operatorname", "mathop") else "ord")

    def _font(self, name: str) -> _Piece:
        table = _FONT_TABLES[name]
        text = self._argument()
        return _Piece("".join(_UNICODEIT.get(f"\\{table}{{{ch}}}", ch) for ch in text))

    def _accent(self, name: str) -> _Piece:
        mark = _ACCENTS[name]
        text = self._argument().strip()
        if not text:
            return _Piece("")
        if name in _EVERY_CHAR_ACCENTS:
            return _Piece("".join(ch + mark if not ch.isspace() else ch for ch in text))
        return _Piece(text + mark)

    def _delimiter(self, _: str) -> _Piece:
        self._skip_spaces()
        token = self._next()
        if token.kind == "char":
            return _Piece("" if token.value == "." else token.value)
        symbol = _symbol(token.value)
        if symbol is None:
            raise UnsupportedLatex(f"unknown delimiter \\{token.value}")
        return _Piece(symbol)

    def _skip_argument(self, _: str) -> _Piece:
        self._raw_group()
        return _Piece("")

    def _space_argument(self, _: str) -> _Piece:
        self._raw_group()
        return _Piece(" ", "space")

    def _stacked(self, name: str) -> _Piece:
        annotation = self._argument()
        base = self._argument()
        if name == "underset":
            return _Piece(base + _script(annotation, _SUBSCRIPTS, "_"), "rel")
        return _Piece(base + _script(annotation, _SUPERSCRIPTS, "^"), "rel")

    def _long_arrow(self, name: str) -> _Piece:
        below = self._optional_tokens()
        above = self._argument()
        arrow = {"xrightarrow": "→", "xleftarrow": "←", "xRightarrow": "⇒"}[name]
        text = arrow + _script(above, _SUPERSCRIPTS, "^")
        if below:
            text += _script(self._render_tokens(below), _SUBSCRIPTS, "_")
        return _Piece(text, "rel")

    def _brace(self, _: str) -> _Piece:
        return _Piece(self._argument())

    def _root(self, _: str) -> _Piece:
        self._skip_spaces()
        index_tokens = self._optional_tokens()
        radicand = self._argument().strip()
        body = radicand if _is_simple(radicand) else f"({radicand})"
        if index_tokens is None:
            return _Piece("√" + body)
        index = "".join(self._render_tokens(index_tokens).split())
        sign = _ROOTS.get(index)
        if sign is None:
            sign = _script(index, _SUPERSCRIPTS, "^").removeprefix("^") + "√"
        return _Piece(sign + body)

    def _negation(self, _: str) -> _Piece:
        self._skip_spaces()
        negated = self._atom()
        text = negated.text.strip()
        return _Piece(_NEGATED.get(text) or text + "\u0338", "rel")

    def _pmod(self, _: str) -> _Piece:
        return _Piece(f" (mod {self._argument().strip()})")

    def _tag(self, _: str) -> _Piece:
        return _Piece(f"{_EM_SPACE}({self._text_mode(self._raw_group())})")

    def _textcolor(self, _: str) -> _Piece:
        self._raw_group()
        return _Piece(self._argument())

    # Environments ---------------------------------------------------------------------------

    def _environment(self, _: str) -> _Piece:
        name = self._group_word()
        if name == "array" or name.startswith("alignat") or name == "alignedat":
            self._raw_group()  # column spec / number of columns
        kind = self._environment_kind(name)
        rows = [row for row in self._rows(environment=name) if any(c.strip() for c in row)]
        if not self._is_display:
            return _Piece(self._inline_rows(rows, name, kind))
        text = self._lines(rows, kind, name)
        return _Piece(text, "block" if "\n" in text else "ord")

    @staticmethod
    def _environment_kind(name: str) -> str:
        if name in _ALIGN_ENVIRONMENTS:
            return "aligned"
        if name in _CASES_ENVIRONMENTS:
            return "cases"
        if name in _MATRIX_DELIMITERS:
            return "matrix"
        raise UnsupportedLatex(f"unknown environment {name}")

    @staticmethod
    def _cells(row: list[str], kind: str, separator: str) -> str:
        cells = [cell.strip() for cell in row]
        if kind == "aligned":
            # & alternates: x &= 1 is one equation; the next & starts a new column.
            return "".join(c + (_EM_SPACE if i % 2 else " ") for i, c in enumerate(cells))
        if kind == "cases":
            return ", ".join(cell for cell in cells if cell)
        return separator.join(cells)

    def _lines(self, rows: list[list[str]], kind: str, name: str = "") -> str:
        lines = [self._cells(row, kind, _EM_SPACE) for row in rows]
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
            left, right, top, middle, bottom, rights = _MATRIX_DELIMITERS[name]
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
            left, right = _MATRIX_DELIMITERS[name][:2]
            return f"{left}{body}{right}"
        return body
