"""StreamRenderer on a virtual clock against a sink that behaves like a chat platform."""

from __future__ import annotations

import asyncio
import html
import itertools
import re
from typing import Any

import pytest

from bot.render.delivery import (
    DeliveryFailed,
    DeliveryOptions,
    NotModified,
    RetryAfter,
    TransientSinkError,
)
from bot.render.layout import MARKER, DiscordLayout, Layout, ReplyView, TelegramLayout
from bot.render.pacing import ChatPacer
from bot.render.stream import StreamRenderer
from bot.types import (
    AnswerDelta,
    Queued,
    ReasoningDelta,
    ReplyFinished,
    ReplyStatus,
    Started,
)
from tests.render.helpers import FakeClock, FakeSink, assert_telegram_html, scripted


def _renderer(
    clock: FakeClock,
    layout: Layout | None = None,
    *,
    pacer: ChatPacer | None = None,
    sink: FakeSink | None = None,
    **options: Any,
) -> tuple[StreamRenderer, FakeSink]:
    layout = layout or TelegramLayout("hidden")
    sink = sink or FakeSink(clock, limit=layout.limit, measure=layout.measure)  # type: ignore[attr-defined]
    pacer = pacer or ChatPacer(clock, min_interval=0.0)
    delivery = DeliveryOptions(**options)
    return StreamRenderer(sink, layout, clock=clock, pacer=pacer, options=delivery), sink


def _finished(
    answer: str, reasoning: str = "", status: ReplyStatus = ReplyStatus.COMPLETE, note=None
):
    return ReplyFinished(status=status, answer=answer, reasoning=reasoning, note=note)


def _words(text: str) -> list[str]:
    return re.findall(r"w\d+_\d+", html.unescape(re.sub(r"<[^>]*>", "", text)))


_EPSILON = 1e-9  # float rounding of virtual times (0.05 + 1.0 - 0.05 < 1.0)


def _assert_paced(sink: FakeSink, interval: float) -> None:
    for index in sink.messages:
        times = [call.time for call in sink.calls_to(index)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= interval - _EPSILON for gap in gaps), (index, times)


def _assert_no_identical_calls(sink: FakeSink) -> None:
    assert not [call for call in sink.calls if call.outcome == "not modified"]


async def test_edits_are_paced_per_message_and_never_repeat_the_text() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    words = [f"w0_{j} " for j in range(100)]
    steps = [(0, Started())] + [(0.1, AnswerDelta(w)) for w in words]
    steps.append((0, _finished("".join(words))))
    await clock.drive(renderer.run(scripted(clock, steps)))

    _assert_paced(sink, 1.0)
    _assert_no_identical_calls(sink)
    assert len(sink.calls) <= 12  # 10 s of streaming: about one edit a second
    assert sink.messages == {0: "".join(words).strip()}
    assert sink.finals == {0: True}
    assert renderer.is_done


async def test_the_latest_state_lands_within_one_interval_without_new_events() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    stall = asyncio.Event()
    steps = [
        (0, AnswerDelta("Hello")),
        (0.2, AnswerDelta(" world")),
        (0, stall),
        (0, _finished("Hello world!")),
    ]
    task = asyncio.ensure_future(renderer.run(scripted(clock, steps)))
    await clock.advance(5.0)
    assert [(c.time, c.text) for c in sink.calls] == [
        (0.0, "Hello" + MARKER),
        (1.0, "Hello world" + MARKER),
    ]
    stall.set()
    await clock.drive(task)
    assert (sink.calls[-1].time, sink.calls[-1].text, sink.calls[-1].final) == (
        5.0,
        "Hello world!",
        True,
    )


async def test_long_answer_rolls_over_and_earlier_messages_get_their_final_text() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, TelegramLayout("hidden", limit=500))
    paragraphs = ["Para " + " ".join(f"w{p}_{j}" for j in range(30)) for p in range(12)]
    answer = "\n\n".join(paragraphs)
    chunks = [answer[i : i + 15] for i in range(0, len(answer), 15)]
    steps = [(0.05, AnswerDelta(chunk)) for chunk in chunks] + [(0, _finished(answer))]
    await clock.drive(renderer.run(scripted(clock, steps)))

    assert len(sink.messages) >= 5
    texts = [sink.messages[i] for i in range(len(sink.messages))]
    assert _words("\n".join(texts)) == _words(answer)
    assert all(MARKER not in text for text in texts)
    assert all(sink.finals.values())
    for index in range(len(texts) - 1):
        calls = sink.calls_to(index)
        first_final = next(i for i, call in enumerate(calls) if call.final)
        assert first_final == len(calls) - 1, "a message changed after its final text"
    _assert_paced(sink, 1.0)
    _assert_no_identical_calls(sink)


async def test_final_flush_waits_exactly_as_told_after_429() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    sink.fail(RetryAfter(7), when=lambda index, text, final: final)
    steps = [(0, AnswerDelta("partial")), (3.0, _finished("partial and done"))]
    await clock.drive(renderer.run(scripted(clock, steps)))
    finals = [call for call in sink.calls if call.final]
    assert [(c.time, c.outcome) for c in finals] == [(3.0, "RetryAfter"), (10.0, "ok")]
    assert sink.messages[0] == "partial and done"


async def test_final_flush_retries_transient_errors_with_backoff() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    sink.fail(TransientSinkError("502 Bad Gateway"), when=lambda index, text, final: final, times=4)
    steps = [(0, AnswerDelta("partial")), (3.0, _finished("done"))]
    await clock.drive(renderer.run(scripted(clock, steps)))
    finals = [call for call in sink.calls if call.final]
    assert [c.outcome for c in finals] == ["TransientSinkError"] * 4 + ["ok"]
    # backoff 0.5, 1, 2, 4 s, but never faster than the edit interval of 1 s
    assert [c.time for c in finals] == [3.0, 4.0, 5.0, 7.0, 11.0]
    assert sink.messages[0] == "done"


async def test_a_sink_that_keeps_failing_raises_after_a_bounded_time() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, final_timeout=60.0)
    sink.fail(
        TransientSinkError("connection reset"), when=lambda index, text, final: final, times=-1
    )
    steps = [(0, AnswerDelta("partial")), (1.0, _finished("done"))]
    with pytest.raises(DeliveryFailed, match="not delivered within 60 s") as failure:
        await clock.drive(renderer.run(scripted(clock, steps)))
    assert "connection reset" in str(failure.value)
    finals = [call for call in sink.calls if call.final]
    assert len(finals) >= 8
    assert finals[-1].time <= 1.0 + 60.0
    assert not renderer.is_done


async def test_a_retry_after_beyond_the_deadline_fails_at_once() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, final_timeout=60.0)
    sink.fail(RetryAfter(3600), when=lambda index, text, final: final)
    with pytest.raises(DeliveryFailed):
        await clock.drive(renderer.run(scripted(clock, [(0, _finished("done"))])))
    assert clock.monotonic() == 0.0


async def test_interim_429_defers_the_next_edit() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    sink.fail(RetryAfter(4), when=lambda index, text, final: "w0_3" in text)
    steps = [(0.5, AnswerDelta(f"w0_{j} ")) for j in range(20)]
    steps.append((0, _finished("".join(f"w0_{j} " for j in range(20)))))
    await clock.drive(renderer.run(scripted(clock, steps)))
    failed = next(c for c in sink.calls if c.outcome == "RetryAfter")
    after = [c for c in sink.calls if c.time > failed.time]
    assert after[0].time == failed.time + 4


async def test_thinking_status_ticks_while_nothing_else_changes() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    stall = asyncio.Event()
    task = asyncio.ensure_future(renderer.run(scripted(clock, [(0, Started()), (0, stall)])))
    await clock.advance(16.0)
    assert [(c.time, c.text) for c in sink.calls] == [
        (0.0, "<i>💭 Thinking…</i>" + MARKER),
        (5.0, "<i>💭 Thinking… 5 s</i>" + MARKER),
        (10.0, "<i>💭 Thinking… 10 s</i>" + MARKER),
        (15.0, "<i>💭 Thinking… 15 s</i>" + MARKER),
    ]
    task.cancel()
    await clock.settle()


async def test_queue_position_updates_then_thinking() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    stall = asyncio.Event()
    steps = [(0, Queued(3)), (0.3, Queued(2)), (2.2, Queued(1)), (0.5, Started()), (0, stall)]
    task = asyncio.ensure_future(renderer.run(scripted(clock, steps)))
    await clock.advance(4.0)
    assert [(c.time, _plain(c.text)) for c in sink.calls] == [
        (0.0, "⏳ In queue: position 3 ▌"),
        (1.0, "⏳ In queue: position 2 ▌"),
        (2.5, "⏳ In queue: position 1 ▌"),
        (3.5, "💭 Thinking… ▌"),
    ]
    task.cancel()
    await clock.settle()


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", text))


@pytest.mark.parametrize("mode", ["hidden", "collapsed", "full"])
async def test_each_reasoning_mode_streams_valid_html(mode: str) -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, TelegramLayout(mode, limit=600))
    reasoning = "".join(f"Step {i}: **check** `x<{i}>` & more. " for i in range(60))
    answer = (
        "Result:\n\n```python\n"
        + "\n".join(f"v{i} = {i} ** 2" for i in range(40))
        + "\n```\nDone **now**."
    )
    steps: list[tuple[float, Any]] = [(0, Started())]
    steps += [(0.1, ReasoningDelta(reasoning[i : i + 20])) for i in range(0, len(reasoning), 20)]
    steps += [(0.1, AnswerDelta(answer[i : i + 20])) for i in range(0, len(answer), 20)]
    steps.append((0, _finished(answer, reasoning)))
    await clock.drive(renderer.run(scripted(clock, steps)))

    for call in sink.calls:
        assert_telegram_html(call.text)
    texts = [sink.messages[i] for i in range(len(sink.messages))]
    assert texts == TelegramLayout(mode, limit=600).render(
        ReplyView(reasoning, answer, is_final=True)
    )
    joined = "".join(texts)
    if mode == "hidden":
        assert "Step" not in joined
    elif mode == "collapsed":
        assert texts[0].startswith("<blockquote expandable>") and joined.count("<blockquote") == 1
    else:
        assert "<blockquote>Step 0:" in joined and "expandable" not in joined
    thinking = [c.text for c in sink.calls if "Thinking" in c.text]
    assert thinking and any("Step" in text for text in thinking) == (mode != "hidden")
    _assert_paced(sink, 1.0)
    _assert_no_identical_calls(sink)


async def test_finish_now_after_cancellation_lands_text_so_far_and_note() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, sink=FakeSink(clock, latency=2.0))
    stall = asyncio.Event()
    steps = [(0, AnswerDelta("partial answer")), (0, stall)]
    task = asyncio.ensure_future(renderer.run(scripted(clock, steps)))
    await clock.advance(0.5)  # the first send is in flight until t=2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.drive(renderer.finish_now("⚠️ The bot is restarting."))

    assert sink.max_concurrent == 1
    assert [(c.time, c.final) for c in sink.calls] == [(2.0, False), (4.0, True)]
    assert sink.messages == {0: "partial answer\n\n<i>⚠️ The bot is restarting.</i>"}
    assert renderer.is_done
    await renderer.finish_now("again")  # already done: nothing more
    assert len(sink.calls) == 2


async def test_a_stream_without_reply_finished_ends_as_interrupted() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    await clock.drive(renderer.run(scripted(clock, [(0, AnswerDelta("half"))])))
    assert sink.messages == {0: "half\n\n<i>⚠️ Interrupted.</i>"}


async def test_ending_notes() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    finished = _finished("cut", status=ReplyStatus.LENGTH)
    await clock.drive(renderer.run(scripted(clock, [(0, finished)])))
    assert sink.messages == {0: "cut\n\n<i>✂️ Cut off at the length limit.</i>"}
    clock2 = FakeClock()
    renderer2, sink2 = _renderer(clock2)
    stopped = _finished("", status=ReplyStatus.STOPPED, note="Stopped by you.")
    renderer2.feed(AnswerDelta("so far"))
    renderer2.feed(stopped)
    await clock2.drive(renderer2.wait_done())
    assert sink2.messages == {0: "so far\n\n<i>Stopped by you.</i>"}


async def test_not_modified_counts_as_delivered() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    sink.fail(NotModified(), times=1)
    stall = asyncio.Event()
    task = asyncio.ensure_future(renderer.run(scripted(clock, [(0, AnswerDelta("a")), (0, stall)])))
    await clock.advance(10.0)
    assert [c.outcome for c in sink.calls] == ["NotModified"]
    task.cancel()
    await clock.settle()


async def test_renderers_of_one_chat_share_its_pacer_and_its_429() -> None:
    clock = FakeClock()
    chat = ChatPacer(clock, min_interval=1.0)
    elsewhere = ChatPacer(clock, min_interval=1.0)
    first, first_sink = _renderer(clock, pacer=chat)
    second, second_sink = _renderer(clock, pacer=chat)
    third, third_sink = _renderer(clock, pacer=elsewhere)
    first_sink.fail(RetryAfter(10), when=lambda index, text, final: "w0_5" in text)

    def steps(p: int) -> list[tuple[float, Any]]:
        words = [f"w{p}_{j} " for j in range(40)]
        return [(0.25, AnswerDelta(w)) for w in words] + [(0, _finished("".join(words)))]

    await clock.drive(
        asyncio.gather(
            first.run(scripted(clock, steps(0))),
            second.run(scripted(clock, steps(1))),
            third.run(scripted(clock, steps(2))),
        )
    )
    chat_times = sorted(c.time for c in first_sink.calls + second_sink.calls)
    assert all(b - a >= 1.0 - _EPSILON for a, b in itertools.pairwise(chat_times))
    flood = next(c.time for c in first_sink.calls if c.outcome == "RetryAfter")
    assert not [t for t in chat_times if flood < t < flood + 10]
    assert [c for c in third_sink.calls if flood < c.time < flood + 10]  # another chat goes on
    for sink, p in ((first_sink, 0), (second_sink, 1), (third_sink, 2)):
        assert _words(sink.messages[0]) == [f"w{p}_{j}" for j in range(40)]


async def test_discord_layout_rolls_over_at_2000() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, DiscordLayout("collapsed"))
    reasoning = "thinking hard " * 400
    answer = "\n\n".join("Para " + " ".join(f"w{p}_{j}" for j in range(80)) for p in range(12))
    steps: list[tuple[float, Any]] = [
        (0.2, ReasoningDelta(reasoning[i : i + 500])) for i in range(0, len(reasoning), 500)
    ]
    steps += [(0.2, AnswerDelta(answer[i : i + 300])) for i in range(0, len(answer), 300)]
    steps.append((0, _finished(answer, reasoning)))
    await clock.drive(renderer.run(scripted(clock, steps)))
    texts = [sink.messages[i] for i in range(len(sink.messages))]
    assert len(texts) >= 4 and all(len(t) <= 2000 for t in texts)
    assert texts[0].startswith("> *… (earlier reasoning trimmed)*\n> ")
    assert _words("\n".join(texts)) == _words(answer)


class _ShrinkingLayout:
    """A layout whose second rendering needs fewer messages than the first."""

    limit = 4096

    def __init__(self) -> None:
        self.num_renders = 0

    def render(self, view: ReplyView) -> list[str]:
        self.num_renders += 1
        if view.is_final:
            return ["all in one"]
        return ["part one", "part two" + MARKER]

    def measure(self, text: str) -> int:
        return len(text)


async def test_a_shrinking_layout_leaves_a_placeholder_not_a_stale_copy() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, _ShrinkingLayout())  # type: ignore[arg-type]
    steps = [(0, AnswerDelta("x")), (3.0, _finished("x"))]
    await clock.drive(renderer.run(scripted(clock, steps)))
    assert sink.messages == {0: "all in one", 1: "…"}
    assert sink.finals == {0: True, 1: True}


async def test_a_sink_error_that_is_not_transient_stops_the_reply_early() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock)
    sink.fail(
        LookupError("message to edit not found"), when=lambda index, text, final: "w0_3" in text
    )
    steps = [(0.5, AnswerDelta(f"w0_{j} ")) for j in range(100)]
    with pytest.raises(LookupError):
        await clock.drive(renderer.run(scripted(clock, steps)))
    assert clock.monotonic() < 10.0  # not after all 50 s of events


async def test_feed_without_run() -> None:
    clock = FakeClock()
    renderer, sink = _renderer(clock, DiscordLayout("collapsed"))
    renderer.feed(Started())
    renderer.feed(ReasoningDelta("Let me see."))
    await clock.advance(2.0)
    assert sink.messages == {0: "> Let me see.\n-# 💭 Thinking…" + MARKER}
    renderer.feed(AnswerDelta("It is 4."))
    renderer.feed(_finished("It is 4.", "Let me see."))
    await clock.drive(renderer.wait_done())
    assert sink.messages == {0: "> Let me see.\nIt is 4."}
    assert renderer.shown == ["> Let me see.\nIt is 4."] == renderer.messages
