"""LocalEngine on the CPU: batching equivalence, cancellation, per-request stops, shutdown."""

from __future__ import annotations

import asyncio

import pytest
import torch

from bot.engine.base import (
    EngineError,
    FinishReason,
    GenerationRequest,
    Queued,
    SamplingParams,
    Started,
    TextDelta,
)
from bot.engine.model import DecoderWeights
from tests.engine.streams import Reader, chat_prompt, collect
from tests.support.models import EOS_ID, build_scripted_model

REASONING = "Okay, the user greets me in Chinese and I should answer politely."
ANSWER = "# 你好!\n\nIt is a **nice** day 👩‍💻 🇯🇵 — `print(42)`"
SCRIPT = f"{REASONING}</think>\n\n{ANSWER}"

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
ENDLESS = SamplingParams(max_new_tokens=100_000, temperature=0.0)  # with no EOS: until stopped


@pytest.fixture(scope="module")
def scripted_model(tokenizer):
    """Emits SCRIPT then EOS after any prompt that ends with the chat template's "<think>\\n"."""
    return build_scripted_model(tokenizer, SCRIPT)


@pytest.fixture(scope="module")
def script_ids(tokenizer) -> list[int]:
    return tokenizer.encode(SCRIPT, add_special_tokens=False)


def request(
    tokenizer, text: str, params: SamplingParams = GREEDY, owner: str = ""
) -> GenerationRequest:
    return GenerationRequest(chat_prompt(tokenizer, text), params, owner=owner)


# -- batching never changes results


TEXTS = (
    "你好",
    "What is 2 + 2?",
    "Write a limerick about a cat who learns to code in Python.",
    "Tell me a story about the sea, with a storm, a lighthouse and a happy ending, please.",
    "Why?",
)
MAX_NEW_TOKENS = (3, 12, 6, 12, 9)  # the short ones leave while the others decode


@pytest.mark.parametrize(
    "prefill_budget", [2048, 5], ids=["whole-prompts", "prompts-in-chunks-between-steps"]
)
async def test_greedy_text_is_the_same_alone_and_among_others(
    make_engine, random_model, tokenizer, prefill_budget
):
    requests = [
        request(tokenizer, text, SamplingParams(max_new_tokens=n, temperature=0.0), f"user{i}")
        for i, (text, n) in enumerate(zip(TEXTS, MAX_NEW_TOKENS, strict=True))
    ]
    sampled = request(tokenizer, "Sing!", SamplingParams(max_new_tokens=10, temperature=1.0))
    engine = make_engine(random_model, num_slots=4, prefill_tokens=prefill_budget)
    async with engine:
        alone = [await collect(engine.submit(r)) for r in requests]

        readers = [Reader(engine.submit(requests[0])), Reader(engine.submit(requests[1]))]
        await readers[0].until_text()  # the first ones are decoding when the next arrive
        readers.append(Reader(engine.submit(sampled)))  # a sampled row in the same batch
        readers.append(Reader(engine.submit(requests[2])))
        await readers[1].until_text()
        readers += [Reader(engine.submit(r)) for r in requests[3:]]  # six requests, four slots
        await asyncio.gather(*(reader.to_end() for reader in readers))
    together = [readers[0], readers[1], *readers[3:]]

    assert len({reader.text for reader in alone}) == len(alone)  # distinct: mix-ups show
    for one, crowd, n in zip(alone, together, MAX_NEW_TOKENS, strict=True):
        assert crowd.text == one.text
        assert crowd.reason == one.reason == FinishReason.LENGTH
        assert crowd.finished.num_generated_tokens == one.finished.num_generated_tokens == n
    assert any(reader.positions for reader in readers)  # someone waited for a free slot


async def test_the_engine_text_is_transformers_greedy_text(make_engine, random_model, tokenizer):
    import torch

    prompt = chat_prompt(tokenizer, TEXTS[3])
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = random_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            temperature=None,
            top_p=None,
            pad_token_id=EOS_ID,
        )
    expected = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
    async with make_engine(random_model) as engine:
        result = await collect(engine.submit(GenerationRequest(prompt, GREEDY)))
    assert result.text == expected


# -- per-request stops (scripted model: the exact text is known)


async def test_eos_ends_the_stream_with_the_exact_script(
    make_engine, scripted_model, tokenizer, script_ids
):
    async with make_engine(scripted_model) as engine:
        result = await collect(engine.submit(request(tokenizer, "你好", SamplingParams())))
    assert result.text == SCRIPT  # Chinese, emoji, Markdown and </think>, never half a character
    assert "\ufffd" not in "".join(e.text for e in result.events if isinstance(e, TextDelta))
    assert result.reason == FinishReason.EOS
    finished = result.finished
    assert finished.num_generated_tokens == len(script_ids) + 1  # the EOS counts
    assert finished.num_prompt_tokens == len(chat_prompt(tokenizer, "你好"))
    assert result.events[0] == Started(num_prompt_tokens=finished.num_prompt_tokens)
    assert finished.first_token_seconds is not None
    assert 0 <= finished.queued_seconds <= finished.first_token_seconds <= finished.total_seconds


@pytest.mark.parametrize(
    ("stop", "shown"),
    [
        ("ser gree", "Okay, the u"),  # starts inside " user", ends inside " gre" + "ets"
        ("** day 👩", REASONING + "</think>\n\n# 你好!\n\nIt is a **nice"),  # emoji bytes
    ],
)
async def test_a_stop_string_split_across_tokens_ends_the_text_before_it(
    make_engine, scripted_model, tokenizer, script_ids, stop, shown
):
    assert stop in SCRIPT
    assert not any(stop in tokenizer.decode([token]) for token in script_ids)  # really split
    params = SamplingParams(stop=("never appears", stop))
    async with make_engine(scripted_model) as engine:
        result = await collect(engine.submit(request(tokenizer, "hi", params)))
    assert result.reason == FinishReason.STOP
    assert result.text == shown
    assert result.finished.num_generated_tokens < len(script_ids)


async def test_max_new_tokens_gives_length_with_exactly_that_many(
    make_engine, scripted_model, tokenizer, script_ids
):
    async with make_engine(scripted_model) as engine:
        results = await asyncio.gather(
            *(
                collect(engine.submit(request(tokenizer, "hi", SamplingParams(max_new_tokens=n))))
                for n in (1, 4, 16)
            )
        )
    for n, result in zip((1, 4, 16), results, strict=True):
        assert result.reason == FinishReason.LENGTH
        assert result.finished.num_generated_tokens == n
        assert result.text == tokenizer.decode(script_ids[:n])


async def test_text_held_back_for_a_possible_stop_is_released_at_the_length_limit(
    make_engine, scripted_model, tokenizer
):
    # After 4 tokens the text ends in "ser", which could still become the stop "ser gree".
    params = SamplingParams(max_new_tokens=4, stop=("ser gree",))
    async with make_engine(scripted_model) as engine:
        result = await collect(engine.submit(request(tokenizer, "hi", params)))
    assert (result.reason, result.text) == (FinishReason.LENGTH, "Okay, the user")


async def test_concurrent_requests_each_keep_their_own_params(
    make_engine, scripted_model, tokenizer, script_ids
):
    params = {
        "plain": SamplingParams(),
        "sampled": SamplingParams(temperature=0.6, top_p=0.95),  # the script is certain
        "think-stop": SamplingParams(stop=("</think>",)),
        "split-stop": SamplingParams(stop=("ser gree",)),
        "short": SamplingParams(max_new_tokens=5),
    }
    async with make_engine(scripted_model, num_slots=5) as engine:
        streams = {name: engine.submit(request(tokenizer, name, p)) for name, p in params.items()}
        results = dict(
            zip(streams, await asyncio.gather(*(collect(s) for s in streams.values())), strict=True)
        )
    outcome = {name: (result.reason, result.text) for name, result in results.items()}
    assert outcome == {
        "plain": (FinishReason.EOS, SCRIPT),
        "sampled": (FinishReason.EOS, SCRIPT),
        "think-stop": (FinishReason.STOP, REASONING),
        "split-stop": (FinishReason.STOP, "Okay, the u"),
        "short": (FinishReason.LENGTH, tokenizer.decode(script_ids[:5])),
    }
    assert not any(result.positions for result in results.values())  # all ran at once


async def test_sampling_settings_are_per_request(make_engine, random_model, tokenizer):
    def params(temperature: float, top_p: float) -> SamplingParams:
        return SamplingParams(max_new_tokens=8, temperature=temperature, top_p=top_p)

    settings = {
        "greedy": params(0.0, 1.0),
        "nucleus-of-one": params(1.0, 1e-9),  # only the most likely token is left: greedy
        "free": params(1.0, 1.0),  # a draw from all 152064 tokens of a random model
    }
    async with make_engine(random_model) as engine:
        alone = await collect(engine.submit(request(tokenizer, "Sing!", settings["greedy"])))
        streams = {
            name: engine.submit(request(tokenizer, "Sing!", p)) for name, p in settings.items()
        }
        texts = {name: (await collect(stream)).text for name, stream in streams.items()}
    assert texts["greedy"] == texts["nucleus-of-one"] == alone.text
    assert texts["free"] != alone.text


async def test_a_running_request_past_its_deadline_ends_with_timeout(
    make_engine, random_model, tokenizer
):
    params = SamplingParams(max_new_tokens=100_000, temperature=0.0, timeout_seconds=0.2)
    async with make_engine(random_model, slot_tokens=4096, eos_token_ids=()) as engine:
        result = await collect(engine.submit(request(tokenizer, "hi", params)))
    assert result.reason == FinishReason.TIMEOUT
    assert result.finished.num_generated_tokens < 4000


async def test_a_waiting_request_past_its_deadline_ends_with_timeout(
    make_engine, random_model, tokenizer
):
    async with make_engine(random_model, num_slots=1, eos_token_ids=()) as engine:
        running = Reader(engine.submit(request(tokenizer, "busy", ENDLESS)))
        await running.until_text()
        params = SamplingParams(timeout_seconds=0.05)
        waiting = await collect(engine.submit(request(tokenizer, "in line", params)))
        assert waiting.reason == FinishReason.TIMEOUT
        assert not waiting.has_started
        running.stream.cancel()
        await running.to_end()
    assert running.reason == FinishReason.CANCELLED


async def test_a_request_the_model_fails_on_ends_with_error_and_others_go_on(
    make_engine, random_model, tokenizer
):
    broken = GenerationRequest((151646, 151644, 999_999, 151645), GREEDY)  # id past the vocab
    async with make_engine(random_model) as engine:
        failed = await collect(engine.submit(broken))
        after = await collect(engine.submit(request(tokenizer, "still there?")))
    assert failed.reason == FinishReason.ERROR
    assert failed.finished.error == "the model failed (IndexError)"
    assert failed.text == ""
    assert after.reason == FinishReason.LENGTH and after.text


# -- cancellation


async def test_cancel_ends_the_stream_and_stops_the_work(make_engine, random_model, tokenizer):
    async with make_engine(random_model, num_slots=2, eos_token_ids=()) as engine:
        cancelled = Reader(engine.submit(request(tokenizer, "long", ENDLESS)))
        neighbour = Reader(
            engine.submit(
                request(tokenizer, "next", SamplingParams(max_new_tokens=40, temperature=0))
            )
        )
        await cancelled.until_text()
        cancelled.stream.cancel()
        await cancelled.to_end()
        await neighbour.to_end()
    assert cancelled.reason == FinishReason.CANCELLED
    assert neighbour.reason == FinishReason.LENGTH
    # The neighbour decoded its 40 tokens; the cancelled one stopped a step or so after cancel().
    assert cancelled.finished.num_generated_tokens < 40


@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_cancelling_frees_the_slot_for_a_waiting_request(
    make_engine, random_model, tokenizer, how
):
    async with make_engine(random_model, num_slots=1, eos_token_ids=()) as engine:
        first = Reader(engine.submit(request(tokenizer, "long", ENDLESS)))
        await first.until_text()
        waiting = Reader(engine.submit(request(tokenizer, "waiting")))
        await waiting.until_type(Queued)
        assert waiting.positions == [1]
        if how == "cancel":
            first.stream.cancel()
        else:
            await first.stream.aclose()
        await first.to_end()
        await waiting.to_end()
    assert first.reason == FinishReason.CANCELLED
    assert waiting.reason == FinishReason.LENGTH
    assert waiting.has_started and waiting.text


async def test_a_cancelled_consumer_task_cancels_its_stream(make_engine, random_model, tokenizer):
    async with make_engine(random_model, num_slots=1, eos_token_ids=()) as engine:
        stream = engine.submit(request(tokenizer, "long", ENDLESS))
        seen: list[object] = []
        has_text = asyncio.Event()

        async def consume() -> None:
            try:
                async for event in stream:
                    seen.append(event)
                    if isinstance(event, TextDelta):
                        has_text.set()
            finally:
                stream.cancel()  # what a front-end does when its handler task is cancelled

        task = asyncio.create_task(consume())
        await has_text.wait()
        waiting = Reader(engine.submit(request(tokenizer, "waiting")))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rest = await Reader(stream, list(seen)).to_end()
        await waiting.to_end()
    assert rest.reason == FinishReason.CANCELLED
    assert waiting.reason == FinishReason.LENGTH  # it got the slot


async def test_cancelling_a_waiting_request_moves_the_others_up(
    make_engine, random_model, tokenizer
):
    async with make_engine(random_model, num_slots=1, eos_token_ids=()) as engine:
        running = Reader(engine.submit(request(tokenizer, "long", ENDLESS)))
        await running.until_type(Started)
        second = Reader(engine.submit(request(tokenizer, "second")))
        third = Reader(engine.submit(request(tokenizer, "third")))
        await third.until(lambda event: getattr(event, "position", 0) == 2)
        second.stream.cancel()
        await second.to_end()
        await third.until(lambda event: getattr(event, "position", 0) == 1)
        running.stream.cancel()
        await running.to_end()
        await third.to_end()
    assert second.reason == FinishReason.CANCELLED
    assert second.finished.num_generated_tokens == 0 and not second.has_started
    assert third.positions == [2, 1]
    assert third.reason == FinishReason.LENGTH


async def test_cancel_after_the_end_or_twice_changes_nothing(make_engine, random_model, tokenizer):
    async with make_engine(random_model) as engine:
        done = await collect(
            engine.submit(
                request(tokenizer, "short", SamplingParams(max_new_tokens=2, temperature=0))
            )
        )
        done.stream.cancel()
        await done.stream.aclose()
        await done.to_end()  # still exactly one Finished, nothing after it
        twice = Reader(engine.submit(request(tokenizer, "twice")))
        twice.stream.cancel()
        twice.stream.cancel()
        await twice.to_end()
        after = await collect(engine.submit(request(tokenizer, "after")))
    assert done.reason == FinishReason.LENGTH
    assert twice.reason == FinishReason.CANCELLED
    assert after.reason == FinishReason.LENGTH


# -- shutdown


async def test_leaving_the_engine_ends_running_and_waiting_requests_with_shutdown(
    make_engine, random_model, tokenizer
):
    engine = make_engine(random_model, num_slots=1, eos_token_ids=())
    async with engine:
        broken = asyncio.create_task(engine.wait_broken())
        running = Reader(engine.submit(request(tokenizer, "long", ENDLESS)))
        await running.until_text()
        waiting = Reader(engine.submit(request(tokenizer, "waiting")))
        await waiting.until_type(Queued)
    await asyncio.sleep(0.05)
    assert not broken.done(), "a normal shutdown is not a breakdown"
    broken.cancel()
    # Every event was delivered before __aexit__ returned: read without waiting.
    await running.to_end()
    await waiting.to_end()
    assert running.reason == waiting.reason == FinishReason.SHUTDOWN
    assert running.finished.num_generated_tokens > 0
    assert not waiting.has_started
    with pytest.raises(EngineError, match="not running"):
        engine.submit(request(tokenizer, "too late"))


async def test_a_request_submitted_while_the_engine_stops_is_refused(
    make_engine, random_model, tokenizer
):
    engine = make_engine(random_model)
    await engine.__aenter__()
    stopping = asyncio.create_task(engine.__aexit__(None, None, None))
    await asyncio.sleep(0)  # __aexit__ has begun: it now waits for the worker thread
    try:
        with pytest.raises(EngineError, match="shutting down"):
            # Accepting it could lose it: the worker may already have ended every stream.
            engine.submit(request(tokenizer, "during shutdown"))
    finally:
        await stopping


async def test_after_a_worker_crash_requests_end_with_error_and_new_ones_are_refused(
    make_engine, random_model, tokenizer
):
    engine = make_engine(random_model, num_slots=2, eos_token_ids=())
    slots = engine._slots

    def broken_release(index: int, tokens: object) -> None:
        raise RuntimeError("bookkeeping bug")

    async with engine:
        running = Reader(engine.submit(request(tokenizer, "long", ENDLESS)))
        await running.until_text()
        slots.release = broken_release  # the next request to end crashes the worker
        short = await collect(engine.submit(request(tokenizer, "short", GREEDY)))
        await running.to_end()
        # Not queued forever behind a dead worker: refused at once, with a reason.
        with pytest.raises(EngineError, match="internal error"):
            engine.submit(request(tokenizer, "anyone there?"))
        # What `python -m bot run` waits on to exit non-zero, for a supervisor to restart it.
        assert await asyncio.wait_for(engine.wait_broken(), 10) == (
            "the engine stopped after an internal error"
        )
    assert short.reason == FinishReason.LENGTH  # it had ended before its slot release failed
    assert running.reason == FinishReason.ERROR
    assert running.finished.error == "the engine stopped after an internal error"


async def test_out_of_memory_in_one_prompt_fails_that_request_and_the_others_go_on(
    make_engine, random_model, tokenizer
):
    # A long prompt's prefill runs out of GPU memory; packed with others it would take them
    # down too, so the engine retries the pieces one by one and only the long one fails.
    weights = DecoderWeights.from_hf_model(random_model)
    layer = weights.layers[0]
    qkv = layer.qkv

    def short_of_memory(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 512:  # the long prompt, padded, alone or packed with others
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return qkv(x)

    layer.qkv = short_of_memory
    long_prompt = GenerationRequest(tuple(range(1000, 1400)), GREEDY)
    engine = make_engine(weights, num_slots=4, slot_tokens=512, eos_token_ids=())
    async with engine:
        running = Reader(engine.submit(request(tokenizer, "already decoding", ENDLESS)))
        await running.until_text()
        submitted = [
            engine.submit(request(tokenizer, "short one", GREEDY)),
            engine.submit(long_prompt),
            engine.submit(request(tokenizer, "another short one", GREEDY)),
        ]
        short, failed, other = [await collect(stream) for stream in submitted]
        running.stream.cancel()
        await running.to_end()
        after = await collect(engine.submit(request(tokenizer, "and later?", GREEDY)))
    assert failed.reason == FinishReason.ERROR
    assert failed.finished.error == "the GPU ran out of memory"
    assert short.reason == other.reason == after.reason == FinishReason.LENGTH
    assert short.text and other.text and after.text
    assert running.reason == FinishReason.CANCELLED and running.text
    assert engine.num_running == 0 and engine.num_waiting == 0
