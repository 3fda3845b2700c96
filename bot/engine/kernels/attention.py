"""Decode attention: each row's query heads against its own slot's keys (split-K, then reduce).

A row's positions are split into chunks of `CHUNK` handled by separate programs (so one long
dialogue still spreads over many SMs), each keeping a running max and sum (online softmax);
a second kernel merges the chunks. The grid is fixed by the slot length, so the launch is the
same every step (what a CUDA graph needs); chunks past a row's length return at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 256
_BLOCK_N = 64


@triton.jit
def _attend_chunks(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slots_ptr,
    positions_ptr,
    acc_ptr,
    max_ptr,
    sum_ptr,
    num_slots,
    scale,
    cache_slot_stride,
    cache_head_stride,
    cache_position_stride,
    NUM_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    NUM_CHUNKS: tl.constexpr,
    CHUNK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    chunk = tl.program_id(2)
    slot = tl.load(slots_ptr + row)
    length = tl.load(positions_ptr + row) + 1
    length = tl.where(slot < num_slots, length, 0)  # a padding row attends to nothing
    start = chunk * CHUNK_SIZE
    group = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + group
    is_head = group < GROUP
    partial = (row * NUM_HEADS + heads) * NUM_CHUNKS + chunk  # [GROUP_PAD]
    q = tl.load(
        q_ptr + (row * NUM_HEADS + heads)[:, None] * HEAD_DIM + dims[None, :],
        mask=is_head[:, None],
        other=0.0,
    )
    cache = slot * cache_slot_stride + kv_head * cache_head_stride
    running_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    running_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    # A chunk at or past the row's length runs no iteration: it stores an empty partial.
    end = tl.minimum(start + CHUNK_SIZE, length)
    for block in range(start, end, BLOCK_N):
        keys_at = block + tl.arange(0, BLOCK_N)
        is_key = keys_at < end
        where = cache + keys_at[:, None] * cache_position_stride + dims[None, :]
        k = tl.load(k_cache_ptr + where, mask=is_key[:, None], other=0.0)
        v = tl.load(v_cache_ptr + where, mask=is_key[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * scale
        scores = tl.where(is_key[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        weights = tl.exp(scores - new_max[:, None])
        correction = tl.exp(running_max - new_max)
        running_sum = running_sum * correction + tl.sum(weights, axis=1)
        acc = acc * correction[:, None] + tl.dot(
            weights.to(v.dtype), v, input_precision=PRECISION
        ).to(tl.float32)
        running_max = new_max
    tl.store(max_ptr + partial, running_max, mask=is_head)
    tl.store(sum_ptr + partial, running_sum, mask=is_head)
    tl.store(acc_ptr + partial[:, None] * HEAD_DIM + dims[None, :], acc, mask=is_head[:, None])


@triton.jit
def _merge_chunks(
    acc_ptr,
    max_ptr,
    sum_ptr,
    out_ptr,
    HEAD_DIM: tl.constexpr,
    NUM_CHUNKS: tl.constexpr,
    CHUNKS_PAD: tl.constexpr,
):
    row_head = tl.program_id(0)  # row * heads + head
    chunks = tl.arange(0, CHUNKS_PAD)
    dims = tl.arange(0, HEAD_DIM)
    is_chunk = chunks < NUM_CHUNKS
    partial = row_head * NUM_CHUNKS + chunks
    maxima = tl.load(max_ptr + partial, mask=is_chunk, other=float("-inf"))
    sums = tl.load(sum_ptr + partial, mask=is_chunk, other=0.0)
    overall = tl.max(maxima, axis=0)
    overall = tl.where(overall == float("-inf"), 0.0, overall)  # a padding row: all empty
    factors = tl.where(is_chunk & (maxima > float("-inf")), tl.exp(maxima - overall), 0.0)
    total = tl.sum(sums * factors, axis=0)
    acc = tl.load(
        acc_ptr + partial[:, None] * HEAD_DIM + dims[None, :],
        mask=(is_chunk & (maxima > float("-inf")))[:, None],
        other=0.0,
    )
    out = tl.sum(acc * factors[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + row_head * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty))


def decode_attention(
    q: torch.Tensor,
    slots: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """q [rows, heads, head_dim] against keys 0..position of each row's slot -> [rows, heads *
    head_dim]. k_cache and v_cache are one layer's [slots, kv_heads, positions, head_dim]."""
    rows = q.shape[0]
    group = num_heads // num_kv_heads
    num_chunks = triton.cdiv(k_cache.shape[2], CHUNK)
    acc = torch.empty((rows, num_heads, num_chunks, head_dim), dtype=torch.float32, device=q.device)
    maxima = torch.empty((rows, num_heads, num_chunks), dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxima)
    _attend_chunks[(rows, num_kv_heads, num_chunks)](
        q.contiguous(),
        k_cache,
        v_cache,
        slots,
        positions,
        acc,
        maxima,
        sums,
        k_cache.shape[0],
        head_dim**-0.5,
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        NUM_HEADS=num_heads,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        NUM_CHUNKS=num_chunks,
        CHUNK_SIZE=CHUNK,
        BLOCK_N=_BLOCK_N,
        # float32 models (tests, checks against transformers) are not rounded to TF32.
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    out = torch.empty((rows, num_heads * head_dim), dtype=q.dtype, device=q.device)
    _merge_chunks[(rows * num_heads,)](
        acc,
        maxima,
        sums,
        out,
        HEAD_DIM=head_dim,
        NUM_CHUNKS=num_chunks,
        CHUNKS_PAD=triton.next_power_of_2(num_chunks),
    )
    return out
