"""ReasoningSplitter: streamed <think> ... </think> output into reasoning and answer deltas."""

from __future__ import annotations

import itertools
import random

import pytest

from bot.chat.reasoning import ReasoningSplitter
from bot.types import AnswerDelta, ReasoningDelta


def split_stream(deltas: list[str], starts_in_reasoning: bool = True) -> list:
    splitter = ReasoningSplitter(starts_in_reasoning=starts_in_reasoning)
    events = [event for delta in deltas for event in splitter.push(delta)]
    return events + splitter.flush()


def texts(events: list) -> tuple[str, str]:
    """(reasoning, answer), after checking the events' shape."""
    assert all(event.text for event in events), events  # never an empty delta
    kinds = [type(event) for event in events]
    assert kinds == sorted(kinds, key=lambda kind: kind is AnswerDelta), "answer before reasoning"
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


def reference(text: str, starts_in_reasoning: bool = True) -> tuple[str, str]:
    """What the splitter should produce, computed on the whole text at once."""
    rest = text.lstrip()
    is_reasoning = starts_in_reasoning
    if rest.startswith("<think>"):
        text, is_reasoning = rest[len("<think>") :], True
    if not is_reasoning:
        return "", text.strip()
    reasoning, _, answer = text.partition("</think>")
    return reasoning.strip(), answer.strip()


def test_reasoning_then_answer():
    events = split_stream(["Let me think.\n", "</think>", "\n\nThe answer is 4."])
    assert texts(events) == ("Let me think.", "The answer is 4.")


def test_a_closing_tag_split_across_deltas():
    events = split_stream(["Hmm, 2+2.", "</th", "ink>", "\n\n4"])
    assert texts(events) == ("Hmm, 2+2.", "4")


def test_a_partial_tag_is_held_back_until_it_is_decided():
    splitter = ReasoningSplitter()
    assert splitter.push("Thinking </th") == [ReasoningDelta("Thinking")]
    assert splitter.push("ought") == [ReasoningDelta(" </thought")]
    assert splitter.push("</") == []
    assert splitter.push("think>\n\nDone") == [AnswerDelta("Done")]
    assert splitter.flush() == []


@pytest.mark.parametrize("start", ["<think>", "<think>\n", "\n\n<think>\n", "  <th"])
def test_the_model_opening_think_again_is_dropped(start):
    deltas = [start, "ink>\n" if start.endswith("<th") else "", "reason</think>answer"]
    assert texts(split_stream(deltas)) == ("reason", "answer")


def test_a_think_tag_later_in_the_reasoning_is_text():
    events = split_stream(["I wrote <think> in my notes</think>ok"])
    assert texts(events) == ("I wrote <think> in my notes", "ok")


def test_a_reasoning_that_is_never_closed_stays_reasoning():
    splitter = ReasoningSplitter()
    assert splitter.push("Still thinking about it, ") == [
        ReasoningDelta("Still thinking about it,")
    ]
    assert splitter.push("maybe </th") == [ReasoningDelta(" maybe")]
    assert splitter.flush() == [ReasoningDelta(" </th")]


def test_the_answer_does_not_start_or_end_with_blank_lines():
    splitter = ReasoningSplitter()
    assert splitter.push("Short.\n\n") == [ReasoningDelta("Short.")]
    assert splitter.push("</think>\n\n") == []
    assert splitter.push("\n\nFirst paragraph.\n\n") == [AnswerDelta("First paragraph.")]
    assert splitter.push("Second.\n") == [AnswerDelta("\n\nSecond.")]
    assert splitter.flush() == []


def test_an_empty_reasoning_gives_no_reasoning_events():
    events = split_stream(["\n\n", "</think>", "\n\nHi there"])
    assert events == [AnswerDelta("Hi there")]


def test_after_the_reasoning_tags_are_answer_text():
    events = split_stream(["r</think>Use </think> and <think> in HTML."])
    assert texts(events) == ("r", "Use </think> and <think> in HTML.")


def test_without_an_opened_reasoning_everything_is_answer():
    events = split_stream(["Plain answer, no </think> here."], starts_in_reasoning=False)
    assert texts(events) == ("", "Plain answer, no </think> here.")


def test_without_an_opened_reasoning_the_model_may_open_one():
    events = split_stream(["\n<thi", "nk>\nponder</think>\n\nanswer"], starts_in_reasoning=False)
    assert texts(events) == ("ponder", "answer")


def test_flush_with_only_whitespace_or_a_partial_opening():
    assert split_stream(["\n \n"]) == []
    assert split_stream([" <thi"]) == [ReasoningDelta("<thi")]
    assert split_stream([" <thi"], starts_in_reasoning=False) == [AnswerDelta("<thi")]


CASES = [
    "Let me think.\n\n</think>\n\n**Answer**: 4",
    "<think>\nreason\n</think>answer\n",
    " \n<think>我想想 🤔\n\n这是 </thi 不是标签</think>\n\n答案：👨‍👩‍👧\n\n",
    "never closed </th",
    "never closed <think> either\n\n",
    "</think></think><think>",
    "<</think><think>",
    "\n\n</think>\n\n",
    "<thinking>is not a tag</think>x",
]


@pytest.mark.parametrize("starts_in_reasoning", [True, False])
@pytest.mark.parametrize("text", CASES)
def test_every_split_gives_the_reference_result(text, starts_in_reasoning):
    expected = reference(text, starts_in_reasoning)
    for cut in range(len(text) + 1):
        events = split_stream([text[:cut], text[cut:]], starts_in_reasoning)
        assert texts(events) == expected, cut
    for first, second in itertools.combinations(range(len(text) + 1), 2):
        deltas = [text[:first], text[first:second], text[second:]]
        assert texts(split_stream(deltas, starts_in_reasoning)) == expected, (first, second)
    assert texts(split_stream(list(text), starts_in_reasoning)) == expected


def test_random_texts_and_splits_match_the_reference():
    rng = random.Random(7)
    pieces = ["<think>", "</think>", "<", "</", "think", ">", "\n", " ", "a", "b c", "你", "🎉"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        cuts = sorted(rng.randrange(len(text) + 1) for _ in range(rng.randrange(0, 5)))
        deltas = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
        starts_in_reasoning = rng.random() < 0.7
        events = split_stream(deltas, starts_in_reasoning)
        assert texts(events) == reference(text, starts_in_reasoning), (deltas, starts_in_reasoning)
