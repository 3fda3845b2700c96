"""Properties on arbitrary Unicode: the stop-string matcher and the incremental detokenizer."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.engine.detokenizer import IncrementalDetokenizer
from bot.engine.stops import StopMatcher

FAST = settings(max_examples=200, deadline=None)

# Mostly a few characters, so that stop strings and their prefixes really meet in the text;
# the rest from all of Unicode (astral planes, combining marks, controls).
_CHARACTERS = st.one_of(st.sampled_from("ab<|>/\n 😀é\u0301"), st.characters())


def _chunks(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at the given positions (empty chunks included)."""
    edges = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


# -- stop strings ------------------------------------------------------------------------------


@st.composite
def stops_and_text(draw: st.DrawFn) -> tuple[list[str], str]:
    """Stop strings (some inside others), and a text made of them, their ends, and anything."""
    stop_text = st.text(st.one_of(st.sampled_from("ab"), _CHARACTERS), min_size=1, max_size=5)
    base = draw(stop_text)
    inside = st.tuples(st.integers(0, len(base) - 1), st.integers(0, len(base) - 1)).map(
        lambda ij: base[min(ij) : max(ij) + 1]
    )
    stops = draw(st.lists(st.one_of(stop_text, inside), max_size=3))
    if draw(st.booleans()):
        stops.append(base)
    pieces = [st.text(_CHARACTERS, max_size=6), st.just(base)]
    if stops:
        stop = st.sampled_from(stops)
        cut = st.integers(0, 5)
        pieces += [stop, st.builds(lambda s, n: s[:n], stop, cut)]
        pieces += [st.builds(lambda s, n: s[n:], stop, cut)]
    text = "".join(draw(st.lists(st.one_of(*pieces), max_size=8)))
    return stops, text


def reference_stop(stops: list[str], text: str) -> tuple[str, bool]:
    """From the whole text: the part before the stop string that ends first (then starts first)."""
    best: tuple[int, int] | None = None
    for stop in filter(None, stops):
        for start in range(len(text)):
            if text.startswith(stop, start):
                candidate = (start + len(stop), start)
                best = candidate if best is None else min(best, candidate)
    return (text, False) if best is None else (text[: best[1]], True)


@FAST
@given(stops_and_text(), st.lists(st.integers(min_value=0), max_size=6))
def test_stop_matcher_equals_the_whole_text_reference_however_it_is_chunked(
    case: tuple[list[str], str], cuts: list[int]
) -> None:
    stops, text = case
    expected, should_stop = reference_stop(stops, text)
    matcher = StopMatcher(stops)
    released = ""
    is_stopped = False
    for chunk in _chunks(text, cuts):
        out, is_stopped = matcher.push(chunk)
        released += out
        # Released text is final: never a piece of a stop string that completes later.
        assert expected.startswith(released)
        if is_stopped:
            break
    if not is_stopped:
        released += matcher.flush()
    assert (released, is_stopped) == (expected, should_stop)
    assert not any(stop in released for stop in stops)


@FAST
@given(stops_and_text(), st.text(_CHARACTERS, max_size=5))
def test_stop_matcher_releases_nothing_after_a_stop(case: tuple[list[str], str], more: str) -> None:
    stops, text = case
    matcher = StopMatcher(stops)
    matcher.push(text)
    if matcher.is_stopped:
        assert matcher.push(more) == ("", True)
        assert matcher.flush() == ""


# -- incremental detokenizer -------------------------------------------------------------------

# The model's special and tag tokens, as text: encode() turns them into their own ids.
_TOKENS_AS_TEXT = ["<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]
_UNICODE_TEXT = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(_TOKENS_AS_TEXT)), max_size=6
).map("".join)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _deltas(tokenizer: Any, ids: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer)
    return [detokenizer.push(token_id) for token_id in ids] + [detokenizer.flush()]


# The session-scoped tokenizer fixture is the same object for every example.
_WITH_TOKENIZER = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_WITH_TOKENIZER
@given(text=_UNICODE_TEXT)
def test_detokenizer_reproduces_the_full_decode_without_half_characters(
    tokenizer: Any, text: str
) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    full = _decode(tokenizer, ids)
    deltas = _deltas(tokenizer, ids)
    assert "".join(deltas) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in delta for delta in deltas)


@_WITH_TOKENIZER
@given(data=st.data())
def test_detokenizer_reproduces_the_decode_of_any_token_sequence(tokenizer: Any, data: Any) -> None:
    """A sampled model may emit any ids, also bytes that never form a character."""
    # Most ids are whole words; the byte tokens (the first 256) split characters.
    token = st.one_of(st.integers(0, 255), st.integers(0, len(tokenizer) - 1))
    ids = data.draw(st.lists(token, max_size=24))
    assert "".join(_deltas(tokenizer, ids)) == _decode(tokenizer, ids)
