"""ReasoningSplitter properties on arbitrary Unicode: chunking never matters, nothing is lost."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.reasoning import CLOSE_TAG, OPEN_TAG, ReasoningSplitter
from bot.types import AnswerDelta, ReasoningDelta

FAST = settings(max_examples=300, deadline=None)

# Tags, pieces of tags, every kind of whitespace Python strips, and anything else.
_PIECES = st.one_of(
    st.sampled_from([OPEN_TAG, CLOSE_TAG, "<th", "ink>", "</", "<", ">", "/think>"]),
    st.sampled_from([" ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\x1c", "\x85", "\u2028"]),
    st.text(max_size=8),
)
_OUTPUTS = st.lists(_PIECES, max_size=12).map("".join)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    edges = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


def split(chunks: list[str], starts_in_reasoning: bool) -> tuple[str, str]:
    """(reasoning, answer) from streaming `chunks`, after checking the events' shape."""
    splitter = ReasoningSplitter(starts_in_reasoning=starts_in_reasoning)
    events = [event for chunk in chunks for event in splitter.push(chunk)] + splitter.flush()
    assert all(event.text for event in events)  # never an empty delta
    kinds = [type(event) for event in events]
    assert kinds == sorted(kinds, key=lambda kind: kind is AnswerDelta)  # reasoning first
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


def reference(text: str, starts_in_reasoning: bool) -> tuple[str, str]:
    """The split of the whole text at once: a leading <think>, then the first </think>."""
    rest = text.lstrip()
    is_reasoning = starts_in_reasoning
    if rest.startswith(OPEN_TAG):
        text, is_reasoning = rest[len(OPEN_TAG) :], True
    if not is_reasoning:
        return "", text.strip()
    reasoning, _, answer = text.partition(CLOSE_TAG)
    return reasoning.strip(), answer.strip()


@FAST
@given(_OUTPUTS, st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_the_split_does_not_depend_on_chunking_and_equals_the_reference(
    text: str, cuts: list[int], starts_in_reasoning: bool
) -> None:
    streamed = split(_chunks(text, cuts), starts_in_reasoning)
    assert streamed == split([text], starts_in_reasoning)
    assert streamed == reference(text, starts_in_reasoning)


@FAST
@given(_OUTPUTS, st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_reasoning_and_answer_are_the_output_minus_tags_and_outer_whitespace(
    text: str, cuts: list[int], starts_in_reasoning: bool
) -> None:
    reasoning, answer = split(_chunks(text, cuts), starts_in_reasoning)
    assert reasoning == reasoning.strip() and answer == answer.strip()
    if not starts_in_reasoning and not text.lstrip().startswith(OPEN_TAG):
        assert reasoning == ""

    def squeeze(part: str) -> str:
        return "".join(part.split())

    # Without whitespace, the output is reasoning and answer with at most a leading <think>
    # and one </think> between them taken out: nothing else is lost, nothing added.
    rebuilt = {
        opening + squeeze(reasoning) + closing + squeeze(answer)
        for opening in ("", OPEN_TAG)
        for closing in ("", CLOSE_TAG)
    }
    assert squeeze(text) in rebuilt
