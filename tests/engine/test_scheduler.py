"""Scheduling: FCFS, one running request per owner, queue places, a bounded queue, prompt limits."""

from __future__ import annotations

import pytest

from bot.engine.base import (
    EngineBusy,
    EngineError,
    FinishReason,
    GenerationRequest,
    Queued,
    SamplingParams,
    Started,
)
from bot.engine.scheduler import WaitingQueue
from tests.engine.streams import Reader, chat_prompt, collect

SHORT = SamplingParams(max_new_tokens=2, temperature=0.0)
ENDLESS = SamplingParams(max_new_tokens=100_000, temperature=0.0)  # with no EOS: until stopped


def request(
    tokenizer, text: str, params: SamplingParams = SHORT, owner: str = ""
) -> GenerationRequest:
    return GenerationRequest(chat_prompt(tokenizer, text), params, owner=owner)


# -- WaitingQueue on its own


def owner_queue(*items: str) -> WaitingQueue[str]:
    """Items are "owner:name"."""
    queue: WaitingQueue[str] = WaitingQueue(lambda item: item.split(":")[0])
    for item in items:
        queue.append(item)
    return queue


def test_first_come_first_served():
    queue = owner_queue("a:1", "b:1", "c:1")
    assert [queue.pop_next(set()) for _ in range(3)] == ["a:1", "b:1", "c:1"]
    assert queue.pop_next(set()) is None
    assert len(queue) == 0


def test_an_owner_with_a_running_request_is_skipped_but_keeps_its_place():
    queue = owner_queue("a:2", "b:1", "a:3", "c:1")
    assert queue.pop_next({"a"}) == "b:1"
    assert queue.pop_next({"a", "b"}) == "c:1"
    assert queue.pop_next({"a"}) is None
    assert queue.pop_next(set()) == "a:2"  # a's turn, in order
    assert list(queue) == ["a:3"]


def test_requests_without_an_owner_are_never_held_back():
    queue = owner_queue(":1", ":2")
    assert queue.pop_next({""}) == ":1"
    assert queue.pop_next({"", "x"}) == ":2"


def test_positions_count_from_one_in_arrival_order():
    queue = owner_queue("a:1", "b:1", "c:1")
    assert list(queue.positions({"a"})) == [("a:1", 1), ("b:1", 2), ("c:1", 3)]
    queue.remove("b:1")
    assert list(queue.positions(set())) == [("a:1", 1), ("c:1", 2)]


# -- the engine's scheduling


async def test_first_come_first_served_with_places_that_move_up(
    make_engine, random_model, tokenizer
):
    async with make_engine(random_model, num_slots=1, eos_token_ids=()) as engine:
        first = Reader(engine.submit(request(tokenizer, "first", ENDLESS)))
        await first.until_type(Started)
        waiting = [Reader(engine.submit(request(tokenizer, name))) for name in "dacb"]
        for reader in waiting:
            await reader.until_type(Queued)
        first.stream.cancel()
        for reader in [first, *waiting]:
            await reader.to_end()
    assert first.positions == []  # the slot was free: it started at once
    # Each departure moves everyone up one place, and the one at place 1 is the one that starts.
    assert [reader.positions for reader in waiting] == [[1], [2, 1], [3, 2, 1], [4, 3, 2, 1]]
    assert all(reader.reason == FinishReason.LENGTH for reader in waiting)


async def test_one_running_request_per_owner(make_engine, random_model, tokenizer):
    async with make_engine(random_model, num_slots=2, eos_token_ids=()) as engine:
        first = Reader(engine.submit(request(tokenizer, "one", ENDLESS, owner="alice")))
        await first.until_type(Started)
        # A slot is free, but alice already has a request running: her second one waits ...
        second = Reader(engine.submit(request(tokenizer, "two", owner="alice")))
        assert await second.until_type(Queued) == Queued(position=1)
        # ... while bob, who came later, is served at once.
        bob = await collect(engine.submit(request(tokenizer, "hi", owner="bob")))
        assert bob.positions == [] and bob.reason == FinishReason.LENGTH
        # Still held back once bob has gone: carol, later still, finds a free slot too.
        carol = await collect(engine.submit(request(tokenizer, "hey", owner="carol")))
        assert carol.positions == [] and carol.reason == FinishReason.LENGTH
        first.stream.cancel()
        await first.to_end()
        await second.to_end()
    assert second.positions == [1]
    assert second.reason == FinishReason.LENGTH


async def test_requests_without_an_owner_run_side_by_side(make_engine, random_model, tokenizer):
    async with make_engine(random_model, num_slots=2, eos_token_ids=()) as engine:
        first = Reader(engine.submit(request(tokenizer, "one", ENDLESS)))
        await first.until_type(Started)
        second = await collect(engine.submit(request(tokenizer, "two")))
        first.stream.cancel()
        await first.to_end()
    assert second.positions == [] and second.reason == FinishReason.LENGTH


async def test_a_full_queue_refuses_with_engine_busy(make_engine, random_model, tokenizer):
    async with make_engine(random_model, num_slots=1, max_queue=2, eos_token_ids=()) as engine:
        running = Reader(engine.submit(request(tokenizer, "running", ENDLESS)))
        await running.until_type(Started)  # running requests do not count against the queue
        waiting = [Reader(engine.submit(request(tokenizer, f"waiting {i}"))) for i in (1, 2)]
        with pytest.raises(EngineBusy, match="try again"):
            engine.submit(request(tokenizer, "one too many"))
        assert issubclass(EngineBusy, EngineError)
        waiting[0].stream.cancel()
        await waiting[0].to_end()  # it left the queue: there is room again
        late = Reader(engine.submit(request(tokenizer, "late")))
        await late.until_type(Queued)
        running.stream.cancel()
        for reader in [running, waiting[1], late]:
            await reader.to_end()
    assert waiting[0].reason == FinishReason.CANCELLED
    assert waiting[1].reason == late.reason == FinishReason.LENGTH
    assert late.positions == [2, 1]


async def test_prompt_limits(make_engine, random_model, tokenizer):
    async with make_engine(random_model, slot_tokens=64) as engine:
        with pytest.raises(EngineError, match="does not fit"):
            engine.submit(GenerationRequest(tuple(range(1000, 1064)), SHORT))
        with pytest.raises(EngineError, match="empty prompt"):
            engine.submit(GenerationRequest((), SHORT))
        # The longest prompt that fits gets its first token, and one more in the last position.
        longest = await collect(engine.submit(GenerationRequest(tuple(range(1000, 1063)), SHORT)))
        roomy = await collect(
            engine.submit(
                GenerationRequest(
                    tuple(range(1000, 1063)), SamplingParams(max_new_tokens=9, temperature=0)
                )
            )
        )
    assert longest.reason == FinishReason.LENGTH
    assert longest.finished.num_generated_tokens == 2
    assert roomy.finished.num_generated_tokens == 2  # the slot, not max_new_tokens, ended it
    assert roomy.text == longest.text
