"""The non-matmul steps of a decoder layer, in plain torch: the reference and the fallback.

`TorchOps` runs anywhere (the CPU in tests, GPUs without Triton such as the P100);
bot/engine/kernels/ has the same steps as fused Triton kernels for CUDA. Both keep the KV cache
as [slots, kv_heads, positions, head_dim] per layer and address rows by (slot, position), so a
decode row can sit in any slot. Row slot `num_slots` is the padding row of a batch bucket: its
keys and values are never written where a real slot could read them.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch
from torch.nn import functional as F

from bot.engine.model import ModelShape

log = logging.getLogger(__name__)

# Triton's supported GPUs (its kernels run on older ones, but without any promise).
_TRITON_MIN_CAPABILITY = (8, 0)


class LayerOps(Protocol):
    """The fused elementwise and attention steps the runner calls for every layer."""

    uses_length_buckets: bool  # decode attention reads only the first `length` positions

    def add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rms_norm(x + residual) * weight, x + residual); residual None means x alone."""
        ...

    def rotary_and_cache(
        self,
        qkv: torch.Tensor,
        slots: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        """Rotate q and k of each row, write k and v at (slot, position); return q [R, Hq, D]."""
        ...

    def decode_attention(
        self,
        q: torch.Tensor,
        slots: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        """Each row's query against its slot's keys 0..position; returns [rows, Hq * D]."""
        ...

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up for [rows, 2 * I] -> [rows, I]."""
        ...


class TorchOps:
    """LayerOps in torch; decode attention gathers each row's slot up to a length bucket.

    The cache has one spare position per slot (index `parked`): padding rows write their keys
    there, in slot 0, where no attention ever reads.
    """

    uses_length_buckets = True

    def __init__(
        self, shape: ModelShape, cos: torch.Tensor, sin: torch.Tensor, *, num_slots: int
    ) -> None:
        self._shape = shape
        self._cos = cos
        self._sin = sin
        self._num_slots = num_slots
        self._eps = shape.rms_norm_eps

    def add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        summed = x if residual is None else x + residual
        return F.rms_norm(summed, (summed.shape[-1],), weight, self._eps), summed

    def rotary_and_cache(
        self,
        qkv: torch.Tensor,
        slots: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        shape = self._shape
        rows = qkv.shape[0]
        q, k, v = qkv.split([shape.q_size, shape.kv_size, shape.kv_size], dim=-1)
        parked = k_cache.shape[2] - 1
        cos = self._cos[positions.clamp(max=self._cos.shape[0] - 1)][:, None]
        sin = self._sin[positions.clamp(max=self._sin.shape[0] - 1)][:, None]
        q = _rotate(q.reshape(rows, shape.num_heads, shape.head_dim), cos, sin)
        k = _rotate(k.reshape(rows, shape.num_kv_heads, shape.head_dim), cos, sin)
        is_padding = slots >= self._num_slots
        write_slots = torch.where(is_padding, 0, slots)
        write_at = torch.where(is_padding, parked, positions)
        k_cache[write_slots, :, write_at] = k.to(k_cache.dtype)
        v_cache[write_slots, :, write_at] = v.reshape(rows, shape.num_kv_heads, -1).to(
            v_cache.dtype
        )
        return q

    def decode_attention(
        self,
        q: torch.Tensor,
        slots: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        shape = self._shape
        rows = q.shape[0]
        read_slots = slots.clamp(max=self._num_slots - 1)
        keys = k_cache[read_slots, :, :length]  # [rows, Hkv, length, D]
        values = v_cache[read_slots, :, :length]
        mask = torch.arange(length, device=q.device)[None, :] <= positions[:, None]
        # Grouped-query attention without repeating the cache: a KV head's query heads act as
        # that head's query rows.
        q = q.reshape(rows, shape.num_kv_heads, shape.group, shape.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None, None, :])
        return out.reshape(rows, shape.q_size)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the rotate-half layout; angles in float32, result in x's dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def choose_ops(
    shape: ModelShape,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    num_slots: int,
    device: torch.device,
) -> LayerOps:
    """The fused Triton kernels on a GPU Triton supports, else the torch steps."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= _TRITON_MIN_CAPABILITY:
        try:
            from bot.engine.kernels.ops import TritonOps
        except ImportError as exc:
            log.warning("Triton is not usable (%s): decoding with unfused torch steps", exc)
        else:
            return TritonOps(shape, cos, sin)
    return TorchOps(shape, cos, sin, num_slots=num_slots)
