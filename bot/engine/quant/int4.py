"""Symmetric 4-bit weights with one scale per group of 128 inputs (round to nearest).

Codes are unsigned 0..15 with the zero at 8 and a signed scale per (output, group): the weight
of largest magnitude in a group maps exactly to -8, which uses all 16 levels. This is the
format humming's uint4 kernels read; on the CPU the dequantized weight is the reference.
"""

from __future__ import annotations

import torch

GROUP_SIZE = 128
ZERO = 8


def quantize_int4(
    weight: torch.Tensor, group_size: int = GROUP_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, K] in 0..15, scales [N, K / group_size] in the weight's dtype)."""
    rows, columns = weight.shape
    if columns % group_size:
        raise ValueError(f"int4 needs input sizes divisible by {group_size}, got {columns}")
    groups = weight.float().reshape(rows, columns // group_size, group_size)
    extreme = groups.gather(-1, groups.abs().argmax(dim=-1, keepdim=True))  # signed
    scales = (extreme / -ZERO).to(weight.dtype)  # rounded as stored, then used to quantize
    safe = torch.where(scales == 0, torch.ones_like(scales), scales).float()
    codes = (groups / safe).round().clamp(-ZERO, ZERO - 1) + ZERO
    return codes.to(torch.uint8).reshape(rows, columns), scales[..., 0]


def dequantize_int4(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The weight the codes stand for, in the scales' dtype."""
    rows, columns = codes.shape
    group_size = columns // scales.shape[1]
    values = (codes.float() - ZERO).reshape(rows, scales.shape[1], group_size)
    return (values * scales.float()[..., None]).reshape(rows, columns).to(scales.dtype)
