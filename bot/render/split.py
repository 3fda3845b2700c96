"""Splitting Markdown at a length limit without breaking code fences; UTF-16 lengths."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

Measure = Callable[[str], int]

MIN_SPLIT_LIMIT = 16
_MAX_LANG = 24  # a reopened fence keeps at most this much of the language tag

_FENCE_OPEN = re.compile(r"[ \t]*(?P<marker>`{3,}|~{3,})(?P<info>[^\n]*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(?P<marker>`{3,}|~{3,})[ \t]*")
_LANG = re.compile(r"[\w+#.-]+")


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit Telegram counts in."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# ---------------------------------------------------------------------------------------------
# Code fences


@dataclass(frozen=True, slots=True)
class _Fence:
    """One fenced code block, as offsets into the text."""

    start: int  # first character of the opening line
    body: int  # just after the opening line's newline
    end: int  # first character of the closing line (len(text) when unclosed)
    after: int  # just after the closing line, before its newline (len(text) when unclosed)
    marker: str  # "```", "~~~~", ...
    lang: str

    @property
    def reopen(self) -> str:
        return f"{self.marker}{self.lang}\n"

    @property
    def close(self) -> str:
        return f"\n{self.marker}"


def fence_language(info: str) -> str:
    match = _LANG.match(info.strip())
    return match.group(0)[:_MAX_LANG] if match else ""


def _find_fences(text: str) -> list[_Fence]:
    """Fenced code blocks (lenient CommonMark: any indentation, unclosed ones run to the end)."""
    fences: list[_Fence] = []
    opened: tuple[int, int, str, str] | None = None  # start, body, marker, lang
    pos = 0
    while True:
        newline = text.find("\n", pos)
        line_end = len(text) if newline < 0 else newline
        line = text[pos:line_end]
        if opened is None:
            match = _FENCE_OPEN.fullmatch(line)
            if match and not (match["marker"][0] == "`" and "`" in match["info"]):
                body = min(line_end + 1, len(text))
                opened = (pos, body, match["marker"], fence_language(match["info"]))
        else:
            match = _FENCE_CLOSE.fullmatch(line)
            marker = opened[2]
            if match and match["marker"][0] == marker[0] and len(match["marker"]) >= len(marker):
                fences.append(_Fence(opened[0], opened[1], pos, line_end, marker, opened[3]))
                opened = None
        if newline < 0:
            break
        pos = newline + 1
    if opened is not None:
        fences.append(_Fence(opened[0], opened[1], len(text), len(text), opened[2], opened[3]))
    return fences


class _Fences:
    """Answers 'which fence is around this offset' for cut decisions."""

    def __init__(self, text: str) -> None:
        self.items = _find_fences(text)
        self._starts = [f.start for f in self.items]

    def before(self, pos: int) -> _Fence | None:
        """The last fence that starts before `pos` (the only one that can contain it)."""
        i = bisect.bisect_left(self._starts, pos) - 1
        return self.items[i] if i >= 0 else None

    def end_state(self, end: int) -> tuple[bool, _Fence | None]:
        """Can a piece end at `end`, and which fence must it close?"""
        fence = self.before(end)
        if fence is None or end >= fence.after:
            return True, None
        if end <= fence.body:  # inside or right after the opening line: an empty block
            return False, None
        if end <= fence.end:
            return True, fence
        return False, None  # inside the closing line

    def start_state(self, start: int) -> tuple[bool, _Fence | None]:
        """Can a piece start at `start`, and which fence must it reopen?"""
        fence = self.before(start)
        if fence is None or start >= fence.after:
            return True, None
        if start < fence.body:  # in the middle of the opening line
            return False, None
        if start < fence.end:
            return True, fence
        return False, None  # at or inside the closing line: the piece would start a new block

    def open_at_end(self, text: str) -> _Fence | None:
        last = self.items[-1] if self.items else None
        return (
            last if last is not None and last.end == len(text) and last.body <= len(text) else None
        )


# ---------------------------------------------------------------------------------------------
# Splitting


class _Meter:
    """Measures spans of one text with an additive per-character measure.

    Most characters weigh 1; only the others (emoji in UTF-16, newlines in a quote) are
    recorded, so measuring a long text stays fast.
    """

    def __init__(self, text: str, measure: Measure) -> None:
        self._n = len(text)
        extra = {ch: measure(ch) - 1 for ch in set(text)}
        heavy = "".join(sorted(ch for ch, weight in extra.items() if weight))
        self._positions: list[int] = []
        self._cum_extra = [0]
        if heavy:
            pattern = re.compile("[" + "".join(re.escape(ch) for ch in heavy) + "]")
            for match in pattern.finditer(text):
                self._positions.append(match.start())
                self._cum_extra.append(self._cum_extra[-1] + extra[match.group()])

    def _extra_before(self, index: int) -> int:
        return self._cum_extra[bisect.bisect_left(self._positions, index)]

    def span(self, start: int, end: int) -> int:
        return end - start + self._extra_before(end) - self._extra_before(start)

    def reach(self, start: int, budget: int) -> int:
        """The furthest end with span(start, end) <= budget."""
        low, high = start, self._n
        while low < high:
            mid = (low + high + 1) // 2
            if self.span(start, mid) <= budget:
                low = mid
            else:
                high = mid - 1
        return low

    def back_reach(self, end: int, budget: int) -> int:
        """The earliest start with span(start, end) <= budget."""
        low, high = 0, end
        while low < high:
            mid = (low + high) // 2
            if self.span(mid, end) <= budget:
                high = mid
            else:
                low = mid + 1
        return low


@dataclass(frozen=True, slots=True)
class _Cut:
    end: int  # the piece is text[start:end]
    next: int  # the next piece starts here (whitespace between is dropped)
    newlines: int  # 0 = word boundary, 1 = line, 2+ = paragraph; -1 = hard cut


def _whitespace_cut(text: str, i: int) -> tuple[_Cut, int]:
    """The cut through the whitespace run containing text[i], and where that run begins."""
    a = i
    while a > 0 and text[a - 1].isspace():
        a -= 1
    b = i
    while b < len(text) and text[b].isspace():
        b += 1
    run = text[a:b]
    last_newline = run.rfind("\n")
    # Keep the next line's indentation: it matters inside code and for nested lists.
    nxt = a + last_newline + 1 if last_newline >= 0 else b
    return _Cut(a, nxt, run.count("\n")), a


def _best_cut(text: str, start: int, reach: int, fences: _Fences) -> _Cut:
    """The best place to end a piece that starts at `start` and may extend to `reach`."""
    half = start + (reach - start) / 2
    best: dict[str, _Cut] = {}
    latest: _Cut | None = None
    i = min(reach, len(text) - 1)
    while i > start:
        if not text[i].isspace():
            i -= 1
            continue
        cut, run_start = _whitespace_cut(text, i)
        i = run_start - 1
        if cut.end <= start or cut.next >= len(text):
            continue
        if not (fences.end_state(cut.end)[0] and fences.start_state(cut.next)[0]):
            continue
        latest = latest or cut
        if cut.end < half:
            break
        kind = "paragraph" if cut.newlines >= 2 else "line" if cut.newlines == 1 else "word"
        best.setdefault(kind, cut)
        if kind == "paragraph":
            break
    for kind in ("paragraph", "line", "word"):
        if kind in best:
            return best[kind]
    if latest is not None:
        return latest
    for end in range(reach, start, -1):  # a single word longer than the limit: cut it
        if fences.end_state(end)[0] and fences.start_state(end)[0]:
            return _Cut(end, end, -1)
    return _Cut(reach, reach, -1)


def split_markdown(
    text: str, limit: int, *, first_limit: int | None = None, measure: Measure = len
) -> list[str]:
    """Split `text` into pieces of at most `limit` (the first at most `first_limit`).

    Cuts fall at paragraph, then line, then word boundaries; a word longer than the limit
    is cut hard. A cut inside a fenced code block closes the fence at the end of the piece
    and reopens it (same language) at the start of the next (unless the fence lines would
    take more than half the limit). `measure` must be additive per character (e.g. `len` or
    `utf16_length`). Whitespace at the cuts is dropped.
    """
    for value in (limit, first_limit):
        if value is not None and value < MIN_SPLIT_LIMIT:
            raise ValueError(f"split limit must be at least {MIN_SPLIT_LIMIT}, got {value}")
    text = text.rstrip()
    meter = _Meter(text, measure)
    fences = _Fences(text)
    smallest = min(limit, first_limit or limit)
    overhead = max((measure(f.reopen) + measure(f.close) for f in fences.items), default=0)
    use_fences = overhead <= smallest // 2  # the same choice for every piece keeps them paired
    pieces: list[str] = []
    start = _whitespace_cut(text, 0)[0].next if text[:1].isspace() else 0
    while start < len(text):
        cap = first_limit if (first_limit is not None and not pieces) else limit
        piece, start = _next_piece(text, start, cap, meter, fences, measure, use_fences)
        pieces.append(piece)
    return [piece for piece in pieces if piece.strip()]


def _next_piece(
    text: str,
    start: int,
    cap: int,
    meter: _Meter,
    fences: _Fences,
    measure: Measure,
    use_fences: bool,
) -> tuple[str, int]:
    """One piece that starts at `start` and fits `cap`, and where the next piece starts."""
    _, reopened = fences.start_state(start)
    prefix = reopened.reopen if (reopened and use_fences) else ""
    room = cap - measure(prefix)
    if meter.span(start, len(text)) <= room:
        return prefix + text[start:], len(text)
    budget = room
    while True:
        # The piece ends within `budget`; fence lines take at most half of `cap`, so once
        # budget <= room - that, the piece fits and the loop ends.
        reach = max(meter.reach(start, budget), start + 1)
        cut = _best_cut(text, start, reach, fences)
        _, closing = fences.end_state(cut.end)
        suffix = closing.close if (closing and use_fences) else ""
        size = meter.span(start, cut.end) + measure(suffix)
        if size <= room:
            return prefix + text[start : cut.end] + suffix, cut.next
        budget -= size - room


def tail_markdown(text: str, limit: int, *, measure: Measure = len) -> tuple[str, bool]:
    """The longest end of `text` that fits `limit`, starting at a line or word boundary.

    Returns (tail, was_trimmed). A tail that starts inside a code fence gets the fence reopened.
    """
    if limit < MIN_SPLIT_LIMIT:
        raise ValueError(f"tail limit must be at least {MIN_SPLIT_LIMIT}, got {limit}")
    text = text.strip()
    meter = _Meter(text, measure)
    if meter.span(0, len(text)) <= limit:
        return text, False
    fences = _Fences(text)
    budget = limit
    while True:
        start = _tail_start(text, meter.back_reach(len(text), budget), fences)
        _, reopened = fences.start_state(start)
        prefix = reopened.reopen if reopened else ""
        if measure(prefix) > limit // 2:
            prefix = ""
        size = measure(prefix) + meter.span(start, len(text))
        if size <= limit:  # reached at the latest when budget <= limit/2
            return prefix + text[start:], True
        budget -= size - limit


def _tail_start(text: str, earliest: int, fences: _Fences) -> int:
    """A boundary at or after `earliest`: a line start in the first half, else a word start."""
    half = earliest + (len(text) - earliest) // 2
    for is_boundary in (_is_line_start, _is_word_start):
        for pos in range(max(earliest, 1), min(half, len(text) - 1) + 1):
            if is_boundary(text, pos) and fences.start_state(pos)[0]:
                return pos
    return earliest


def _is_line_start(text: str, pos: int) -> bool:
    return text[pos - 1] == "\n" and text[pos] != "\n"


def _is_word_start(text: str, pos: int) -> bool:
    return text[pos - 1].isspace() and not text[pos].isspace()


def close_open_fence(text: str) -> str:
    """Close a code fence left open at the end of `text` (streaming Markdown, Discord)."""
    fence = _Fences(text).open_at_end(text)
    return text + fence.close if fence is not None else text
