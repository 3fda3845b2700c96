"""FP8 e4m3 weights with one scale per output channel (weight-only: activations stay 16-bit)."""

from __future__ import annotations

import torch

E4M3_MAX = 448.0


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes float8_e4m3fn [N, K], scales [N, 1] in the weight's dtype)."""
    amax = weight.float().abs().amax(dim=1, keepdim=True)
    scales = (amax / E4M3_MAX).to(weight.dtype)
    safe = torch.where(scales == 0, torch.ones_like(scales), scales).float()
    codes = (weight.float() / safe).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes, scales


def dequantize_fp8(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The weight the codes stand for, in the scales' dtype."""
    return (codes.float() * scales.float()).to(scales.dtype)
