"""The Triton kernels against the torch steps they replace, run by Triton's interpreter (float32).

On a GPU the same kernels run compiled (benchmarks/gpu_check.py checks them there in bf16).
"""

from __future__ import annotations

import pytest
import torch

from bot.engine.cache import CacheShape
from bot.engine.model import ModelShape, rotary_tables
from bot.engine.ops import TorchOps
from bot.engine.runner import ModelRunner
from tests.engine.reference import NUM_REFERENCE_TOKENS
from tests.engine.test_runner import Driver
from tests.support.models import tiny_config

pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[test]')")
from bot.engine.kernels.attention import CHUNK
from bot.engine.kernels.ops import TritonOps

SHAPES = {
    # heads / KV heads: a group of 2, and the 14B's odd group of 5 query heads per KV head.
    "group-2": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2),
    "group-5": dict(hidden_size=80, num_attention_heads=5, num_key_value_heads=1),
}
NUM_SLOTS = 3
SLOT_TOKENS = 2 * CHUNK + 100  # three chunks: the split-K merge is exercised


@pytest.fixture(params=SHAPES, ids=list(SHAPES))
def both(request, fixture_path):
    config = tiny_config(**SHAPES[request.param])
    shape = ModelShape.from_config(config)
    cos, sin = rotary_tables(config, SLOT_TOKENS + 1, torch.device("cpu"))
    return shape, TorchOps(shape, cos, sin, num_slots=NUM_SLOTS), TritonOps(shape, cos, sin)


def random(*size: int, seed: int) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


def cache(shape: ModelShape, seed: int) -> torch.Tensor:
    return random(NUM_SLOTS, shape.num_kv_heads, SLOT_TOKENS + 1, shape.head_dim, seed=seed)


def test_add_rms_norm(both):
    shape, reference, fused = both
    x, residual = random(5, shape.hidden_size, seed=1), random(5, shape.hidden_size, seed=2)
    weight = random(shape.hidden_size, seed=3)
    for maybe_residual in (residual, None):
        expected, expected_sum = reference.add_rms_norm(x, maybe_residual, weight)
        out, summed = fused.add_rms_norm(x, maybe_residual, weight)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(summed, expected_sum)


def test_silu_mul(both):
    _, reference, fused = both
    gate_up = random(4, 2 * 3000, seed=4)  # wider than one block of the kernel
    torch.testing.assert_close(fused.silu_mul(gate_up), reference.silu_mul(gate_up))


# Rows in any slot, at the first position, at a chunk's edges and at the slot's last position;
# the last row is a padding row (slot NUM_SLOTS) of a batch bucket.
SLOTS = torch.tensor([0, 2, 1, 0, NUM_SLOTS])
POSITIONS = torch.tensor([0, CHUNK - 1, CHUNK, SLOT_TOKENS - 1, 7])
REAL = [0, 1, 2, 3]


def test_rotary_and_cache_write(both):
    shape, reference, fused = both
    qkv = random(len(SLOTS), shape.q_size + 2 * shape.kv_size, seed=5)
    caches = [(cache(shape, 6), cache(shape, 7)) for _ in range(2)]
    expected_q = reference.rotary_and_cache(qkv, SLOTS, POSITIONS, *caches[0])
    q = fused.rotary_and_cache(qkv, SLOTS, POSITIONS, *caches[1])
    torch.testing.assert_close(q, expected_q)
    # Same keys and values everywhere a real slot can read (the torch steps park the padding
    # row's write in a spare position past the slot's end; the kernel writes nothing).
    for expected, got in zip(caches[0], caches[1], strict=True):
        torch.testing.assert_close(got[:, :, :SLOT_TOKENS], expected[:, :, :SLOT_TOKENS])
    untouched = cache(shape, 6)
    written = caches[1][0] != untouched
    assert written.any(dim=-1).sum() == len(REAL) * shape.num_kv_heads


def test_decode_attention(both):
    shape, reference, fused = both
    q = random(len(SLOTS), shape.num_heads, shape.head_dim, seed=8)
    k_cache, v_cache = cache(shape, 9), cache(shape, 10)
    expected = reference.decode_attention(q, SLOTS, POSITIONS, k_cache, v_cache, SLOT_TOKENS)
    out = fused.decode_attention(q, SLOTS, POSITIONS, k_cache, v_cache, SLOT_TOKENS)
    torch.testing.assert_close(out[REAL], expected[REAL])
    assert torch.isfinite(out).all()  # the padding row too


@pytest.mark.slow
def test_the_runner_on_the_kernels_gives_generate_tokens(random_model, prompts, expected):
    config = random_model.config
    cos, sin = rotary_tables(config, 129, torch.device("cpu"))
    ops = TritonOps(ModelShape.from_config(config), cos, sin)
    runner = ModelRunner(random_model, CacheShape(4, 128), seed=0, ops=ops)
    driver = Driver(runner)
    for slot, prompt in zip((2, 0), prompts[:2], strict=True):
        driver.start(slot, prompt, chunk=5)
    driver.step(NUM_REFERENCE_TOKENS - 1)
    for prompt, tokens in driver.rows.values():
        assert tokens == expected[tuple(prompt)]
