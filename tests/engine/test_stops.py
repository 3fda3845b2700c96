"""StopMatcher: stop strings matched as text, across delta edges, holding back only prefixes."""

from __future__ import annotations

import itertools

import pytest

from bot.engine.stops import StopMatcher


def run(stops: list[str], deltas: list[str]) -> tuple[list[str], bool]:
    """Feed `deltas`; return what was released (flush included unless stopped) and the stop flag."""
    matcher = StopMatcher(stops)
    released: list[str] = []
    for delta in deltas:
        text, is_stopped = matcher.push(delta)
        released.append(text)
        if is_stopped:
            return released, True
    released.append(matcher.flush())
    return released, False


def reference(stops: list[str], text: str) -> tuple[str, bool]:
    """The text before the stop string that completes first (then: starts first)."""
    matches = [(text.find(s) + len(s), text.find(s)) for s in stops if s and s in text]
    if not matches:
        return text, False
    return text[: min(matches)[1]], True


def splits(text: str, max_cuts: int = 2):
    """Every way to cut `text` into up to max_cuts + 1 deltas (empty deltas included)."""
    for num_cuts in range(max_cuts + 1):
        for cuts in itertools.combinations_with_replacement(range(len(text) + 1), num_cuts):
            edges = [0, *cuts, len(text)]
            yield [text[a:b] for a, b in itertools.pairwise(edges)]


def test_no_stop_strings_pass_everything_through_at_once():
    matcher = StopMatcher([])
    assert matcher.push("Hello <|end|>") == ("Hello <|end|>", False)
    assert matcher.flush() == ""


def test_text_before_the_stop_is_returned_and_the_rest_dropped():
    matcher = StopMatcher(["<|end|>\n"])
    assert matcher.push("Answer: 4<|end|>\nmore text") == ("Answer: 4", True)
    assert matcher.is_stopped
    assert matcher.push("even more") == ("", True)
    assert matcher.flush() == ""


def test_a_stop_split_across_deltas_matches():
    matcher = StopMatcher(["<|end|>\n"])
    assert matcher.push("Answer <|e") == ("Answer ", False)
    assert matcher.push("nd|") == ("", False)
    assert matcher.push(">\nignored") == ("", True)


@pytest.mark.parametrize(
    "text",
    ["<|en", "<|endoftext|>", "<|end of story", "<|end|>", "<|end|> \n", "x <|end|", "<<|end|>"],
)
def test_text_that_only_starts_like_the_stop_is_output_not_a_stop(text):
    # The notebook compared only the first token of "<|end|>\n", so all of these stopped it.
    for deltas in splits(text):
        released, is_stopped = run(["<|end|>\n"], deltas)
        assert not is_stopped, deltas
        assert "".join(released) == text


def test_only_a_possible_stop_prefix_is_held_back():
    matcher = StopMatcher(["<|end|>\n", "\n\nUser:"])
    assert matcher.push("a < b") == ("a < b", False)
    assert matcher.push(" and <") == (" and ", False)
    assert matcher.push("|x") == ("<|x", False)
    assert matcher.push("done\n") == ("done", False)
    assert matcher.push("\nUs") == ("", False)
    assert matcher.push("e") == ("", False)
    assert matcher.push("d") == ("\n\nUsed", False)
    assert matcher.flush() == ""


def test_held_back_text_is_released_by_flush():
    matcher = StopMatcher(["<|end|>\n"])
    assert matcher.push("bye<|end|>") == ("bye", False)
    assert matcher.flush() == "<|end|>"


def test_overlapping_prefixes_are_not_lost():
    # "aba" could still become "abab"; after "abaa" only the final "a" can, and does.
    matcher = StopMatcher(["abab"])
    assert matcher.push("xaba") == ("x", False)
    assert matcher.push("a") == ("aba", False)
    assert matcher.push("bab") == ("", True)


def test_the_stop_that_completes_first_wins():
    assert reference(["abcd", "bc"], "abcde") == ("a", True)
    for deltas in splits("xabcde"):
        released, is_stopped = run(["abcd", "bc"], deltas)
        assert ("".join(released), is_stopped) == ("xa", True)


@pytest.mark.parametrize(
    ("stops", "text"),
    [
        (["<|end|>\n"], "Sure<|en<|end|>\nrest"),
        (["<|end|>\n", "<|endoftext|>"], "text <|endoftext|> more"),
        (["</s>", "<｜User｜>"], "a</b></s"),
        (["abab", "bb"], "aabababb"),
        (["\n\n\n"], "one\n\ntwo\n\n\nthree"),
        (["你好"], "你你好吗"),
        (["👨‍👩‍👧"], "👨‍👩 👨‍👩‍👧"),
    ],
)
def test_result_does_not_depend_on_how_the_text_is_split(stops, text):
    expected = reference(stops, text)
    for deltas in splits(text):
        released, is_stopped = run(stops, deltas)
        assert ("".join(released), is_stopped) == expected, deltas


def test_empty_stop_strings_are_ignored():
    matcher = StopMatcher(["", "END"])
    assert matcher.push("text") == ("text", False)
    assert matcher.push("END") == ("", True)
