"""The LaTeX vocabulary: symbol commands (unicodeit's tables, with our overrides), script
letters, math alphabets, accents, and which commands are functions, operators or relations."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

from unicodeit.data import COMBININGMARKS, REPLACEMENTS, SUBSUPERSCRIPTS

EM_SPACE = "\u2003"  # \quad, and gaps between matrix cells: kept when spaces are tidied


def sub_super_maps() -> tuple[Mapping[str, str], Mapping[str, str]]:
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


SUBSCRIPTS, SUPERSCRIPTS = sub_super_maps()
UNICODEIT = MappingProxyType(dict(REPLACEMENTS))
SYMBOL_KEY = re.compile(r"\\(?:[A-Za-z]+|[^A-Za-z])")

# Where unicodeit's choice is worse for chat (a CJK bracket, '*' for \star) or missing.
SYMBOL_OVERRIDES = MappingProxyType(
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
        "quad": EM_SPACE,
        "qquad": EM_SPACE * 2,
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


def name_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


FUNCTIONS = name_set(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth sech csch log ln lg exp "
    "det gcd deg dim ker hom arg Pr mod bmod"
)
# Operators whose sub/superscripts are limits: a space separates them from what follows.
LIMIT_FUNCTIONS = name_set("lim liminf limsup max min sup inf argmax argmin")
BIG_OPERATORS = name_set(
    "sum prod coprod int iint iiint oint bigcup bigcap bigoplus bigotimes bigvee bigwedge"
)
RELATIONS = name_set(
    "le leq ge geq ne neq approx equiv sim simeq cong propto to gets rightarrow leftarrow "
    "Rightarrow Leftarrow implies impliedby iff Leftrightarrow leftrightarrow longrightarrow "
    "longleftarrow Longrightarrow Longleftarrow longleftrightarrow Longleftrightarrow mapsto "
    "in notin ni subset subseteq supset supseteq subsetneq supsetneq ll gg leqslant geqslant "
    "perp parallel models vdash"
)
NEGATED = MappingProxyType(
    {"=": "≠", "<": "≮", ">": "≯", "∈": "∉", "≤": "≰", "≥": "≱", "⊂": "⊄", "⊆": "⊈", "≡": "≢"}
)
IGNORED = name_set(
    "displaystyle textstyle scriptstyle scriptscriptstyle limits nolimits nonumber notag "
    "big Big bigg Bigg bigl Bigl biggl Biggl bigr Bigr biggr Biggr bigm Bigm biggm Biggm "
    "hline middle relax allowbreak"
)
SKIP_ONE_ARGUMENT = name_set("phantom hphantom vphantom label vspace color")
TEXT_COMMANDS = name_set(
    "text textrm textnormal textbf textit textsf texttt textup textsc emph mbox hbox"
)
PLAIN_FONTS = name_set("mathrm mathit mathsf mathtt mathnormal mathop operatorname")
FONT_TABLES = MappingProxyType(
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
ACCENTS = MappingProxyType(
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
EVERY_CHAR_ACCENTS = name_set("overline underline bar strikethrough cancel bcancel xcancel sout")
VULGAR_FRACTIONS = MappingProxyType(
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
ROOTS = MappingProxyType({"2": "√", "3": "∛", "4": "∜"})

ALIGN_ENVIRONMENTS = name_set(
    "aligned align align* alignat alignat* alignedat gathered gather gather* split equation "
    "equation* multline multline* eqnarray eqnarray* flalign flalign*"
)
MATRIX_DELIMITERS = MappingProxyType(
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
CASES_ENVIRONMENTS = name_set("cases dcases rcases")


def is_letter_like(symbol: str) -> bool:
    """Greek letters, ∂, ∇ and the like: written next to what they apply to."""
    return len(symbol) == 1 and (unicodedata.category(symbol).startswith("L") or symbol in "∂∇∠△¬∡")


def symbol_for(name: str) -> str | None:
    """The Unicode text of a symbol command (without the backslash), if known."""
    if name in SYMBOL_OVERRIDES:
        return SYMBOL_OVERRIDES[name]
    return UNICODEIT.get("\\" + name)
