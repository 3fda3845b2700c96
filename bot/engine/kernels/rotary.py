"""Rotary embedding of q and k, and the KV-cache write, in one kernel per row and head."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_and_cache(
    qkv_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    cos_ptr,
    sin_ptr,
    slots_ptr,
    positions_ptr,
    num_slots,
    qkv_row_stride,
    cache_slot_stride,
    cache_head_stride,
    cache_position_stride,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    row = tl.program_id(0)
    head = tl.program_id(1)  # 0..NUM_HEADS-1: a query head; then the KV heads
    half = HEAD_DIM // 2
    offsets = tl.arange(0, HEAD_DIM // 2)
    position = tl.load(positions_ptr + row)
    cos = tl.load(cos_ptr + position * half + offsets)
    sin = tl.load(sin_ptr + position * half + offsets)
    base = qkv_ptr + row * qkv_row_stride
    source = base + head * HEAD_DIM  # q heads, then k heads, as the fused projection lays them
    x1 = tl.load(source + offsets).to(tl.float32)
    x2 = tl.load(source + half + offsets).to(tl.float32)
    out1 = x1 * cos - x2 * sin
    out2 = x2 * cos + x1 * sin
    if head < NUM_HEADS:
        target = q_out_ptr + (row * NUM_HEADS + head) * HEAD_DIM
        tl.store(target + offsets, out1.to(q_out_ptr.dtype.element_ty))
        tl.store(target + half + offsets, out2.to(q_out_ptr.dtype.element_ty))
    else:
        slot = tl.load(slots_ptr + row)
        if slot < num_slots:  # padding rows of a batch bucket write nothing
            kv_head = head - NUM_HEADS
            where = slot * cache_slot_stride + kv_head * cache_head_stride
            where += position * cache_position_stride
            tl.store(k_cache_ptr + where + offsets, out1.to(k_cache_ptr.dtype.element_ty))
            tl.store(k_cache_ptr + where + half + offsets, out2.to(k_cache_ptr.dtype.element_ty))
            value = base + (NUM_HEADS + NUM_KV_HEADS + kv_head) * HEAD_DIM
            all_offsets = tl.arange(0, HEAD_DIM)
            tl.store(v_cache_ptr + where + all_offsets, tl.load(value + all_offsets))


def rotary_and_cache(
    qkv: torch.Tensor,
    slots: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """q rotated [rows, heads, head_dim]; k rotated and v written at (slot, position)."""
    rows = qkv.shape[0]
    qkv = qkv.contiguous()
    q = torch.empty((rows, num_heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    _rotary_and_cache[(rows, num_heads + num_kv_heads)](
        qkv,
        q,
        k_cache,
        v_cache,
        cos,
        sin,
        slots,
        positions,
        k_cache.shape[0],
        qkv.stride(0),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
    )
    return q
