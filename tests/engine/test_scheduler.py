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
from bot.engine.cache import SlotTable
from bot.engine.scheduler import Scheduler, WaitingQueue
from bot.engine.sequence import Sequence
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
    assert list(queue.positions()) == [("a:1", 1), ("b:1", 2), ("c:1", 3)]
    queue.remove("b:1")
    assert list(queue.positions()) == [("a:1", 1), ("c:1", 2)]


# -- the Scheduler's plans on their own (no model, no device)


def sequence(
    request_id: int,
    prompt_len: int,
    *,
    owner: str = "",
    max_new: int = 8,
    dialogue: str = "",
    prompt: tuple[int, ...] | None = None,
) -> Sequence:
    ids = (
        prompt
        if prompt is not None
        else tuple(range(100 + request_id, 100 + request_id + prompt_len))
    )
    request = GenerationRequest(
        ids, SamplingParams(max_new_tokens=max_new), owner=owner, dialogue=dialogue
    )
    return Sequence(request_id, request, None, 0.0, detokenizer=None, stops=None)


def run_plan(plan) -> None:
    """What the worker does with a plan it launched (without a model)."""
    for work in plan.prefill:
        work.sequence.num_cached = work.chunk.end
    for seq in plan.decode:
        seq.num_dispatched += 1


def test_a_plan_admits_in_order_into_free_slots_and_decodes_completed_prompts():
    scheduler = Scheduler(SlotTable(2), slot_tokens=64, prefill_tokens=100)
    first, second, third = sequence(1, 10), sequence(2, 20), sequence(3, 5)
    for seq in (first, second, third):
        scheduler.add(seq)
    plan = scheduler.schedule(now=1.0)
    assert [seq for seq, _ in plan.started] == [first, second]
    assert [events for _, events in plan.started] == [[Started(10)], [Started(20)]]
    assert {first.slot, second.slot} == {0, 1} and third.slot == -1
    assert [(w.sequence, w.chunk.start, len(w.chunk.token_ids)) for w in plan.prefill] == [
        (first, 0, 10),
        (second, 0, 20),
    ]
    assert plan.decode == [first, second]  # prompts completing in this plan decode in it too
    run_plan(plan)
    assert scheduler.schedule(now=2.0).decode == [first, second]
    scheduler.finish(first)
    plan = scheduler.schedule(now=3.0)
    assert [seq for seq, _ in plan.started] == [third] and third.slot == first.slot
    assert plan.decode == [second, third]


def test_a_long_prompt_is_prefilled_over_several_plans_while_others_decode():
    scheduler = Scheduler(SlotTable(2), slot_tokens=256, prefill_tokens=16)
    short, long = sequence(1, 4), sequence(2, 40)
    scheduler.add(short)
    scheduler.add(long)
    chunks, decoding = [], []
    for _ in range(3):
        plan = scheduler.schedule(now=0.0)
        chunks.append([(w.sequence.request_id, w.chunk.start, w.chunk.end) for w in plan.prefill])
        decoding.append([seq.request_id for seq in plan.decode])
        run_plan(plan)
    assert chunks == [[(1, 0, 4), (2, 0, 12)], [(2, 12, 28)], [(2, 28, 40)]]
    assert decoding == [[1], [1], [1, 2]]  # the long one decodes once its last chunk is in


def test_a_plan_holds_back_an_owners_second_request_and_stops_at_the_length_limit():
    scheduler = Scheduler(SlotTable(3), slot_tokens=12, prefill_tokens=100)
    a1, a2, b = sequence(1, 8, owner="a"), sequence(2, 4, owner="a"), sequence(3, 4, max_new=3)
    for seq in (a1, a2, b):
        scheduler.add(seq)
    plan = scheduler.schedule(now=0.0)
    assert [seq for seq, _ in plan.started] == [a1, b]
    assert list(scheduler.positions()) == [(a2, 1)]
    decoded = {a1: 0, b: 0}
    for _ in range(10):
        plan = scheduler.schedule(now=0.0)
        for seq in plan.decode:
            decoded[seq] += 1
        run_plan(plan)
    # b: the prefill gives its first token, two steps the other two of max_new_tokens = 3.
    # a1: 8 prompt tokens in a 12-token slot: 4 steps write positions 8..11.
    assert decoded == {a1: 4, b: 2}


def test_the_dialogues_own_slot_is_taken_back_and_only_the_new_tokens_are_prefilled():
    slots = SlotTable(2)
    scheduler = Scheduler(slots, slot_tokens=256, prefill_tokens=1000)
    turn1 = sequence(1, 0, dialogue="chat-a", prompt=tuple(range(1, 31)))
    other = sequence(2, 0, dialogue="chat-b", prompt=tuple(range(500, 520)))
    scheduler.add(turn1)
    scheduler.add(other)
    run_plan(scheduler.schedule(now=0.0))
    turn1.generated = [900, 901, 902]  # its answer; the last token's KV is not written yet
    scheduler.finish(turn1)
    scheduler.finish(other)
    # Turn 2 resends turn 1 and the answer (here without the last token), then the new message.
    turn2 = sequence(3, 0, dialogue="chat-a", prompt=(*range(1, 31), 900, 901, 77, 78))
    scheduler.add(turn2)
    plan = scheduler.schedule(now=0.0)
    assert turn2.slot == turn1.slot
    assert turn2.num_reused == 32
    assert [(w.chunk.start, w.chunk.token_ids) for w in plan.prefill] == [(32, (77, 78))]
    assert slots.stats.num_hits == 1 and slots.stats.num_reused_tokens == 32


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
