"""Tokens of a formula, and the rendered pieces the parser joins (spacing, scripts, tidying)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.render.latex_vocabulary import EM_SPACE, SUBSCRIPTS, SUPERSCRIPTS

# \boxed{...} is marked with these (private-use characters) so that the Markdown layer can
# make it bold after escaping the rest; a source containing them is rejected.
BOLD_OPEN = "\ue000"
BOLD_CLOSE = "\ue001"


class UnsupportedLatex(ValueError):
    """The formula uses something this converter cannot show faithfully."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "cmd" (a command name, or one non-letter for control symbols), "space", "char"
    value: str


TOKEN_PATTERN = re.compile(r"\\([A-Za-z]+)\*?|\\(.)|(\s+)|(.)", re.DOTALL)


def tokenize(source: str) -> list[Token]:
    if re.search(r"(?<!\\)(?:\\\\)*\\$", source):
        raise UnsupportedLatex("a lone backslash at the end")
    tokens = []
    for match in TOKEN_PATTERN.finditer(source):
        name, symbol, space, char = match.groups()
        if name is not None:
            tokens.append(Token("cmd", name))
        elif symbol is not None:
            tokens.append(Token("cmd", " " if symbol.isspace() else symbol))  # "\<newline>"
        elif space is not None:
            tokens.append(Token("space", " "))
        else:
            tokens.append(Token("char", char))
    return tokens


# ---------------------------------------------------------------------------------------------
# Pieces and how they join


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    kind: str = "ord"  # ord, space, rel, func, limits (a function/operator with limits), frac,
    # boxed, block (several lines)


OPERATOR_CHARS = frozenset("+-−±∓=<>≤≥≠≈×·÷/,;:→←⇒⇔⟹⟺|∣∈∉⊂⊆∪∩∧∨")
SUPER_OR_SUB = frozenset(SUPERSCRIPTS.values()) | frozenset(SUBSCRIPTS.values())


def top_level_chars(text: str) -> list[str] | None:
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


def is_term(text: str) -> bool:
    """A product-like term that needs no parentheses before '/' (2π, n(n+1), x²)."""
    chars = top_level_chars(text)
    if not text or chars is None:
        return False
    return not any(ch.isspace() or ch in OPERATOR_CHARS for ch in chars)


SIMPLE = re.compile(r"[√∂∇]?(?:\d+(?:\.\d+)?|[^\W\d_]+[′']*|\S)")


def is_simple(text: str) -> bool:
    """A single number, symbol or word: safe after '/' or '√' without parentheses."""
    if SIMPLE.fullmatch(text):
        return True
    if text[:1] == "(" and text[-1:] == ")" and top_level_chars(text[1:-1]) is not None:
        return True
    body = text.rstrip("".join(SUPER_OR_SUB) + "′'")
    if body != text and body and SIMPLE.fullmatch(body):
        return True
    # f(x), sin(x): a name applied to a bracketed argument
    match = re.fullmatch(r"[^\W\d_]+(\(.*\))", text)
    return bool(match and top_level_chars(match.group(1)[1:-1]) is not None)


def script_text(text: str, table: Mapping[str, str], marker: str) -> str:
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


def join_pieces(pieces: list[Piece], *, in_script: bool = False) -> str:
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


def tidy_text(text: str, *, is_display: bool) -> str:
    lines = []
    for line in text.split("\n"):
        line = re.sub(r" {2,}", " ", line.strip(" "))
        line = re.sub(rf" ?({EM_SPACE}+) ?", r"\1", line).strip()
        line = re.sub(r"(?<=[(\[{⌊⌈⟨]) | (?=[)\]}⌋⌉⟩])", "", line)  # \left( x \right) -> (x)
        if line:
            lines.append(line)
    return ("\n" if is_display else " ").join(lines)
