"""4-bit weights with one scale (and optionally one zero point) per group of inputs.

Codes are unsigned 0..15; a weight is scale x (code - zero). Quantizing at load (round to
nearest, group 128) is symmetric: the zero is 8 and the scale signed, so the weight of largest
magnitude in a group maps exactly to -8, which uses all 16 levels. Pre-quantized checkpoints
(GPTQ, AWQ) may carry a zero point per group instead. This is the format humming's uint4
kernels read; on the CPU the dequantized weight is the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def dequantize_int4(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None
) -> torch.Tensor:
    """The weight the codes stand for, in the scales' dtype (zeros None: 8 everywhere)."""
    rows, columns = codes.shape
    groups = scales.shape[1]
    offset = ZERO if zeros is None else zeros.float()[..., None]
    values = codes.float().reshape(rows, groups, columns // groups) - offset
    return (values * scales.float()[..., None]).reshape(rows, columns).to(scales.dtype)


@dataclass(frozen=True)
class Int4Weights:
    """One linear map's 4-bit weight as read from a pre-quantized checkpoint.

    codes uint8 [N, K] in 0..15; scales [N, K / group] in the compute dtype; zeros uint8
    [N, K / group] in 0..15, or None where every zero is 8 (symmetric: humming's faster path).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]

    def dequantize(self) -> torch.Tensor:
        """scales x (codes - zeros), in the scales' dtype."""
        return dequantize_int4(self.codes, self.scales, self.zeros)

    def eights(self) -> torch.Tensor:
        """The zeros a symmetric weight implies."""
        return torch.full(self.scales.shape, ZERO, dtype=torch.uint8, device=self.codes.device)

    @classmethod
    def concat(cls, parts: Sequence[Int4Weights]) -> Int4Weights:
        """The parts stacked along N (fused QKV, gate/up): every row keeps its own groups."""
        if len({(p.codes.shape[1], p.scales.shape[1]) for p in parts}) != 1:
            raise ValueError("fused parts need the same input size and group size")
        if all(p.zeros is None for p in parts):
            zeros = None
        else:
            zeros = torch.cat([p.zeros if p.zeros is not None else p.eights() for p in parts])
        return cls(
            codes=torch.cat([p.codes for p in parts]),
            scales=torch.cat([p.scales for p in parts]),
            zeros=zeros,
        )
