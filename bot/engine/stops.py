"""Stop strings matched as text across delta edges, holding back only what could still match."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Cuts a text stream at the first complete stop string.

    Text is released as soon as it cannot be the start of a stop string. When several stop
    strings could match, the one that completes first wins (then the one that starts first),
    so the result does not depend on how the text was split into deltas.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        # An empty stop string would end every answer before it starts: it cannot be meant.
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self._is_stopped = False

    @property
    def is_stopped(self) -> bool:
        return self._is_stopped

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to show now, whether a stop string matched)."""
        if self._is_stopped:
            return "", True
        buffer = self._held + text
        match_start = self._first_match(buffer)
        if match_start is not None:
            self._held = ""
            self._is_stopped = True
            return buffer[:match_start], True
        hold_from = self._hold_from(buffer)
        self._held = buffer[hold_from:]
        return buffer[:hold_from], False

    def flush(self) -> str:
        """The stream ended for another reason: the held-back text is plain output after all."""
        held, self._held = self._held, ""
        return "" if self._is_stopped else held

    def _first_match(self, buffer: str) -> int | None:
        best: tuple[int, int] | None = None  # (end, start) of the match that completes first
        for stop in self._stops:
            start = buffer.find(stop)
            if start >= 0 and (best is None or (start + len(stop), start) < best):
                best = (start + len(stop), start)
        return None if best is None else best[1]

    def _hold_from(self, buffer: str) -> int:
        """Start of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        longest = max((len(s) for s in self._stops), default=1)
        for start in range(max(0, len(buffer) - longest + 1), len(buffer)):
            tail = buffer[start:]
            if any(stop.startswith(tail) for stop in self._stops):
                return start
        return len(buffer)
