"""TritonOps: the LayerOps of bot/engine/ops.py as the fused kernels of this package."""

from __future__ import annotations

import torch

from bot.engine.kernels.activation import silu_mul
from bot.engine.kernels.attention import decode_attention
from bot.engine.kernels.norm import add_rms_norm
from bot.engine.kernels.rotary import rotary_and_cache
from bot.engine.model import ModelShape


class TritonOps:
    """LayerOps on CUDA: one kernel per step; decode attention reads each row's own length."""

    uses_length_buckets = False

    def __init__(self, shape: ModelShape, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self._shape = shape
        self._cos = cos.contiguous()
        self._sin = sin.contiguous()

    def add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return add_rms_norm(x, residual, weight, self._shape.rms_norm_eps)

    def rotary_and_cache(
        self,
        qkv: torch.Tensor,
        slots: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        shape = self._shape
        return rotary_and_cache(
            qkv,
            slots,
            positions,
            k_cache,
            v_cache,
            self._cos,
            self._sin,
            num_heads=shape.num_heads,
            num_kv_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
        )

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
        return decode_attention(
            q,
            slots,
            positions,
            k_cache,
            v_cache,
            num_heads=shape.num_heads,
            num_kv_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
        )

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        return silu_mul(gate_up)
