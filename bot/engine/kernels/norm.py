"""Residual add + RMSNorm in one pass over each row."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    summed_ptr,
    hidden,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    offsets = tl.arange(0, BLOCK)
    mask = offsets < hidden
    x = tl.load(x_ptr + row * hidden + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + row * hidden + offsets, mask=mask, other=0.0).to(tl.float32)
        # The sum is rounded to the activations' dtype before the norm reads it, as in torch.
        x = x.to(summed_ptr.dtype.element_ty)
        tl.store(summed_ptr + row * hidden + offsets, x, mask=mask)
        x = x.to(tl.float32)
    variance = tl.sum(x * x, axis=0) / hidden
    weight = tl.load(weight_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.rsqrt(variance + eps) * weight
    tl.store(out_ptr + row * hidden + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual) * weight, x + residual) for rows of x [rows, hidden]."""
    rows, hidden = x.shape
    x = x.contiguous()
    out = torch.empty_like(x)
    summed = x if residual is None else torch.empty_like(x)
    _add_rms_norm[(rows,)](
        x,
        x if residual is None else residual.contiguous(),
        weight,
        out,
        summed,
        hidden,
        eps,
        HAS_RESIDUAL=residual is not None,
        BLOCK=triton.next_power_of_2(hidden),
        num_warps=8 if hidden >= 4096 else 4,
    )
    return out, summed
