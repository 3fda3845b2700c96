"""ModelRunner against transformers' own greedy generate() on the tiny float32 random model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bot.engine.base import EngineError
from bot.engine.cache import CacheShape, default_cache_shape
from bot.engine.runner import ModelRunner
from bot.engine.sampler import sample
from bot.engine.scheduler import PrefillChunk
from tests.engine.reference import NUM_REFERENCE_TOKENS
from tests.support.models import build_random_model


class Driver:
    """Drives a ModelRunner the way the worker does, recording each slot's generated tokens."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.rows: dict[int, tuple[list[int], list[int]]] = {}  # slot -> (prompt, generated)

    def prefill(
        self, slot: int, prompt: list[int], *, start: int = 0, end: int | None = None
    ) -> None:
        """Prefill prompt[start:end] into `slot` without completing it (a partial prefill)."""
        end = len(prompt) if end is None else end
        self.runner.launch([PrefillChunk(slot, tuple(prompt[start:end]), start)], [False], [], 0)

    def start(
        self,
        slot: int,
        prompt: list[int],
        *,
        chunk: int | None = None,
        first: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> None:
        """Prefill prompt[first:] (in chunks of `chunk`); the last chunk makes `slot` decode."""
        self.runner.set_sampling(slot, temperature, top_p)
        chunk = chunk or len(prompt)
        for start in range(first, len(prompt), chunk):
            part = tuple(prompt[start : start + chunk])
            is_last = start + len(part) >= len(prompt)
            step = self.runner.launch([PrefillChunk(slot, part, start)], [is_last], [], 0)
            firsts, decoded = step.wait()
            assert len(firsts) == int(is_last) and not decoded
        self.rows[slot] = (prompt, firsts)

    def max_position(self) -> int:
        return max(len(prompt) + len(generated) - 1 for prompt, generated in self.rows.values())

    def step(self, num_steps: int = 1) -> None:
        """Decode every active row together, in whatever slots they are."""
        for _ in range(num_steps):
            slots = sorted(self.rows)
            _, tokens = self.runner.launch([], [], slots, self.max_position()).wait()
            for slot, token in zip(slots, tokens, strict=True):
                self.rows[slot][1].append(token)

    def finish(self, slot: int) -> list[int]:
        """Drop `slot`'s row; returns its tokens."""
        return self.rows.pop(slot)[1]

    def tokens(self, slot: int) -> list[int]:
        return self.rows[slot][1]


def new_runner(model, *, num_slots: int = 4, slot_tokens: int = 128, seed: int = 0):
    return ModelRunner(model, CacheShape(num_slots, slot_tokens), use_cuda_graphs=True, seed=seed)


def assert_matches(expected, prompt: list[int], tokens: list[int]) -> None:
    reference = expected[tuple(prompt)]
    assert len(tokens) <= len(reference)
    assert tokens == reference[: len(tokens)]


# -- one request at a time


def test_the_reference_is_not_degenerate(expected):
    # Distinct continuations that do not just repeat one token: a mix-up between rows shows.
    continuations = list(expected.values())
    assert len({tuple(tokens) for tokens in continuations}) == len(continuations)
    assert all(len(set(tokens)) > 3 for tokens in continuations)


def test_cuda_graphs_are_off_on_the_cpu(random_model):
    runner = new_runner(random_model)
    assert runner.device.type == "cpu"
    assert runner.warm_up() >= 0.0  # nothing to capture, no error


@pytest.mark.parametrize("slot", [0, 3])
def test_greedy_tokens_of_each_prompt_alone_equal_generate(random_model, prompts, expected, slot):
    runner = new_runner(random_model)
    for prompt in prompts:
        driver = Driver(runner)
        driver.start(slot, prompt)  # any slot decodes: rows name their slot
        driver.step(NUM_REFERENCE_TOKENS - 1)
        assert driver.tokens(slot) == expected[tuple(prompt)]
        driver.finish(slot)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunked_prefill_at_offsets_equals_generate(random_model, prompts, expected, chunk):
    runner = new_runner(random_model)
    driver = Driver(runner)
    prompt = prompts[2]
    driver.start(0, prompt, chunk=chunk)
    driver.step(8)
    assert_matches(expected, prompt, driver.tokens(0))
    assert len(driver.tokens(0)) == 9


def test_a_slot_reused_after_a_longer_prompt_forgets_it(random_model, prompts, expected):
    runner = new_runner(random_model)
    driver = Driver(runner)
    driver.start(0, prompts[3])
    driver.step(8)
    driver.finish(0)
    driver.start(0, prompts[0])  # shorter: stale keys of prompts[3] lie beyond it
    driver.step(8)
    assert_matches(expected, prompts[0], driver.tokens(0))


def test_several_prompts_packed_into_one_prefill_equal_generate(random_model, prompts, expected):
    runner = new_runner(random_model)
    driver = Driver(runner)
    long_prompt = prompts[3]
    driver.prefill(0, long_prompt, end=9)  # an earlier chunk: the packed one continues it
    chunks = [
        PrefillChunk(0, tuple(long_prompt[9:]), 9),
        PrefillChunk(1, tuple(prompts[0])),
        PrefillChunk(2, tuple(prompts[1])),
    ]
    for chunk in chunks:
        runner.set_sampling(chunk.slot, 0.0, 1.0)
    assert runner.prefill(chunks).shape == (3, random_model.config.vocab_size)
    # The same packed prefill, completing all three prompts, with their first decode step.
    firsts, decoded = runner.launch(chunks, [True, True, True], [0, 1, 2], 64).wait()
    for slot, prompt in enumerate([long_prompt, prompts[0], prompts[1]]):
        driver.rows[slot] = (prompt, [firsts[slot], decoded[slot]])
    driver.step(5)
    for prompt, tokens in driver.rows.values():
        assert len(tokens) == 7
        assert_matches(expected, prompt, tokens)


# -- batched decoding


def test_rows_at_different_positions_decode_together(random_model, prompts, expected):
    runner = new_runner(random_model)
    driver = Driver(runner)
    driver.start(0, prompts[1])
    driver.step(2)
    driver.start(1, prompts[3], chunk=7)  # joins later, prefilled in chunks
    driver.step(2)
    driver.start(2, prompts[0])
    driver.start(3, prompts[2], chunk=5)
    driver.step(NUM_REFERENCE_TOKENS - 5)
    positions = {len(p) + len(g) for p, g in driver.rows.values()}
    assert len(positions) == 4
    for prompt, tokens in driver.rows.values():
        assert len(tokens) >= NUM_REFERENCE_TOKENS - 4
        assert_matches(expected, prompt, tokens)


def test_rows_come_and_go_in_any_slots_without_changing_tokens(random_model, prompts, expected):
    runner = new_runner(random_model)
    driver = Driver(runner)
    for slot in (3, 1, 0):
        driver.start(slot, prompts[slot])
    driver.step(3)
    finished = {tuple(prompts[1]): driver.finish(1)}  # a hole in the middle: nothing moves
    driver.step(3)
    driver.start(2, prompts[2])  # a newcomer in another free slot
    driver.step(2)
    finished[tuple(prompts[0])] = driver.finish(0)
    driver.step(3)
    for prompt, tokens in driver.rows.values():
        finished[tuple(prompt)] = tokens
    assert len(finished) == 4
    for prompt, tokens in finished.items():
        assert len(tokens) >= 4
        assert_matches(expected, list(prompt), tokens)


def test_padding_rows_leave_a_half_prefilled_slot_alone(random_model, prompts, expected):
    # A step of 3 rows computes the 4-row bucket (on a GPU, the captured graph for 4). The
    # padding row must not write into any slot's cache, such as the slot where a long prompt
    # is being prefilled in chunks between steps.
    runner = new_runner(random_model)
    driver = Driver(runner)
    for slot in range(3):
        driver.start(slot, prompts[slot])
    newcomer = prompts[3]
    runner.set_sampling(3, 0.0, 1.0)
    driver.prefill(3, newcomer, end=10)
    assert next(b for b in runner.batch_buckets if b >= 3) == 4
    driver.step(5)
    driver.start(3, newcomer, first=10)
    driver.step(6)
    for prompt, tokens in driver.rows.values():
        assert_matches(expected, prompt, tokens)
    assert len(driver.tokens(3)) == 7


# -- sampling


def test_each_row_samples_with_its_own_settings(random_model, prompts, expected):
    runner = new_runner(random_model, seed=7)
    driver = Driver(runner)
    driver.start(0, prompts[0])  # greedy
    driver.start(1, prompts[1], temperature=1.0, top_p=1e-6)  # a nucleus of one token: greedy
    driver.start(2, prompts[2], temperature=1.0, top_p=1.0)  # a free draw from 152064 tokens
    driver.step(5)
    assert_matches(expected, prompts[0], driver.tokens(0))
    assert_matches(expected, prompts[1], driver.tokens(1))
    sampled = driver.tokens(2)
    assert sampled != expected[tuple(prompts[2])][: len(sampled)]

    again = Driver(new_runner(random_model, seed=7))
    again.start(0, prompts[0])
    again.start(1, prompts[1], temperature=1.0, top_p=1e-6)
    again.start(2, prompts[2], temperature=1.0, top_p=1.0)
    again.step(5)
    assert again.tokens(2) == sampled  # the seed makes sampling reproducible


def test_a_different_seed_samples_differently(random_model, prompts):
    draws = []
    for seed in (1, 2):
        driver = Driver(new_runner(random_model, seed=seed))
        driver.start(0, prompts[0], temperature=1.0, top_p=1.0)
        driver.step(3)
        draws.append(driver.tokens(0))
    assert draws[0] != draws[1]


# -- construction


def test_a_sliding_window_model_is_refused(fixture_path):  # the model is built from its config
    model = build_random_model(use_sliding_window=True, sliding_window=16)
    with pytest.raises(EngineError, match="unsupported model architecture qwen2"):
        new_runner(model)


def test_a_model_of_another_shape_is_refused(fixture_path):
    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = nn.Linear(4, 4)
            self.config = build_random_model().config

    with pytest.raises(EngineError, match="unsupported model architecture Other"):
        new_runner(Other())


def test_the_cache_has_one_slot_per_request(random_model):
    runner = new_runner(random_model, num_slots=3, slot_tokens=100)
    layers, slots, kv_heads, tokens, head_dim = runner.k_cache.shape
    assert (layers, slots, kv_heads, head_dim) == (2, 3, 2, 16)
    assert tokens >= 100
    assert runner.batch_buckets == (1, 2, 3)
    assert runner.length_buckets[-1] == 100


def test_default_cache_shape_fits_full_contexts_when_the_budget_allows():
    shape = default_cache_shape(max_context_tokens=2048, kv_budget_tokens=10_000, max_batch_size=0)
    assert shape == CacheShape(num_slots=4, slot_tokens=2048)
    shape = default_cache_shape(max_context_tokens=2048, kv_budget_tokens=4096, max_batch_size=8)
    assert shape == CacheShape(num_slots=8, slot_tokens=512)
    shape = default_cache_shape(max_context_tokens=4096, kv_budget_tokens=1000, max_batch_size=0)
    assert shape == CacheShape(num_slots=1, slot_tokens=960)  # a multiple of 64
    with pytest.raises(EngineError, match="no memory left"):
        default_cache_shape(max_context_tokens=2048, kv_budget_tokens=0, max_batch_size=0)


def test_nucleus_sampling_draws_from_the_nucleus_in_proportion():
    # p = 0.5, 0.3, 0.15, 0.05 over the first four tokens of a full-size vocabulary (the rest
    # ~0): with top_p 0.9 the nucleus is the first three (0.5 + 0.3 < 0.9 <= 0.95).
    probs = torch.full((152064,), 1e-12)
    probs[:4] = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 4000
    logits = probs.log().expand(rows, -1).contiguous()
    generator = torch.Generator().manual_seed(0)
    tokens = sample(logits, torch.ones(rows), torch.full((rows,), 0.9), generator)
    counts = torch.bincount(tokens, minlength=4)[:4].tolist()
    assert sum(counts) == rows, "nothing is drawn from outside the nucleus"
    for count, p in zip(counts, (0.5, 0.3, 0.15, 0.0), strict=True):
        assert abs(count / rows - p / 0.95) < 0.03
