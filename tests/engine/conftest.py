"""Engine-test fixtures: one torch thread, and LocalEngines on the tiny models."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import torch

from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from tests.engine.reference import NUM_REFERENCE_TOKENS, TEXTS, chat_prompt, generate_greedy
from tests.support.models import EOS_ID


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the tiny models on one intra-op thread.

    Their ops are far too small to gain from more, and on a 2-core machine the OpenMP pool
    competes with the engine's worker thread and the event loop: the tests ran 2-4x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


EngineFactory = Callable[..., LocalEngine]


@pytest.fixture
def make_engine(tokenizer: Any) -> EngineFactory:
    """Build a LocalEngine (start it with `async with`) serving `model` on the CPU."""

    def make(
        model: Any,
        *,
        num_slots: int = 4,
        slot_tokens: int = 256,
        eos_token_ids: Iterable[int] = (EOS_ID,),
        max_queue: int = 256,
        prefill_tokens: int = 2048,
        prefix_reuse: bool = True,
    ) -> LocalEngine:
        runner = ModelRunner(model, CacheShape(num_slots, slot_tokens), seed=0)
        return LocalEngine(
            runner,
            tokenizer,
            eos_token_ids=eos_token_ids,
            max_queue=max_queue,
            warm_up=False,
            prefill_tokens=prefill_tokens,
            prefix_reuse=prefix_reuse,
        )

    return make


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    found = [chat_prompt(tokenizer, text) for text in TEXTS]
    assert len({len(prompt) for prompt in found}) == len(found)  # rows at different positions
    return found


@pytest.fixture(scope="module")
def expected(random_model, prompts) -> dict[tuple[int, ...], list[int]]:
    """Each prompt's greedy continuation, generated alone by transformers."""
    return {
        tuple(prompt): generate_greedy(random_model, prompt, NUM_REFERENCE_TOKENS)
        for prompt in prompts
    }
