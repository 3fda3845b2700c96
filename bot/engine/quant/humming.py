"""humming W4A16 / W8A16 linear maps (CUDA only; the kernels compile through NVRTC on first use).

humming (vllm-project/humming, the Marlin successor in vLLM and SGLang) is handed the codes
and scales our own quantizers made, so the CPU reference (the dequantized weight) and the GPU
kernel compute the same function.
"""

from __future__ import annotations

import functools
import logging

import torch

from bot.engine.quant.fp8 import quantize_fp8
from bot.engine.quant.int4 import GROUP_SIZE, Int4Weights, quantize_int4

log = logging.getLogger(__name__)

HUMMING_VERSION = "0.1.19"
# The CUDA headers humming's NVRTC compile needs at run time (found in a CUDA toolkit, or in
# pip's nvidia-* packages that `humming-kernels[cu12]` / `[cu13]` bring).
_NEEDED_HEADERS = ["cuda.h", "crt/host_defines.h", "cuda/std/cstdint", "nvrtc.h"]


@functools.cache
def humming_problem() -> str | None:
    """Why humming's kernels cannot be built here (None when they can): one line, with a fix."""
    try:
        import humming  # noqa: F401
        from humming.utils.cuda import filter_cuda_paths
    except ImportError:
        return f'humming is not installed (pip install "humming-kernels=={HUMMING_VERSION}")'
    try:
        filter_cuda_paths(required_headers=_NEEDED_HEADERS)
    except RuntimeError as exc:
        return f"humming cannot compile its kernels: {exc}"
    return None


class HummingLinear:
    """A humming layer over our codes and scales; y = x W^T (+ b) in the activations' dtype."""

    def __init__(self, layer: torch.nn.Module, out_features: int, num_bytes: int) -> None:
        self._layer = layer
        self.out_features = out_features
        self.num_bytes = num_bytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._layer(x)


def int4_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> HummingLinear:
    """W4A16, group 128, symmetric, from a 16-bit weight on the GPU."""
    codes, scales = quantize_int4(weight, GROUP_SIZE)
    return _layer(
        codes.to(torch.int32),
        scales,
        bias,
        num_bits=4,
        weight_config={
            "dtype": "uint4",
            "group_size": GROUP_SIZE,
            "scale_dtype": _dtype_name(weight.dtype),
            "has_zero_point": False,
        },
        dtype=weight.dtype,
    )


def prequantized_int4_linear(weights: Int4Weights, bias: torch.Tensor | None) -> HummingLinear:
    """W4A16 from a GPTQ / AWQ checkpoint's codes, scales and zero points, as they are."""
    dtype = weights.scales.dtype
    zero_point = None
    if weights.zeros is not None:
        from humming import ops

        # humming keeps zero points [N / 8, K / group], packed along N: pack each group's
        # row of N zeros as it packs a weight row along K (its own dequantizer unpacks them so).
        by_group = weights.zeros.t().contiguous().to(torch.int32)
        zero_point = ops.pack_weight(by_group, 4).t().contiguous()
    return _layer(
        weights.codes.to(torch.int32),
        weights.scales,
        bias,
        num_bits=4,
        weight_config={
            "dtype": "uint4",
            "group_size": weights.group_size,
            "scale_dtype": _dtype_name(dtype),
            "has_zero_point": zero_point is not None,
        },
        dtype=dtype,
        zero_point=zero_point,
    )


def fp8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> HummingLinear:
    """W8A16 e4m3 with per-channel scales, from a 16-bit weight on the GPU."""
    codes, scales = quantize_fp8(weight)
    return _layer(
        codes.view(torch.uint8).to(torch.int32),
        scales,
        bias,
        num_bits=8,
        weight_config={
            "dtype": "float8e4m3",
            "group_size": 0,
            "scale_dtype": _dtype_name(weight.dtype),
        },
        dtype=weight.dtype,
    )


def _layer(
    codes: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    num_bits: int,
    weight_config: dict[str, object],
    dtype: torch.dtype,
    zero_point: torch.Tensor | None = None,
) -> HummingLinear:
    from humming import ops
    from humming.layer import HummingLayer

    rows, columns = codes.shape
    layer = HummingLayer(
        shape_n=rows,
        shape_k=columns,
        weight_config=weight_config,
        input_config={"dtype": _dtype_name(dtype)},
        has_bias=bias is not None,
        torch_dtype=dtype,
    ).to(codes.device)
    tensors = {"weight": ops.pack_weight(codes.contiguous(), num_bits), "weight_scale": scales}
    if zero_point is not None:
        tensors["zero_point"] = zero_point
    if bias is not None:
        tensors["bias"] = bias.to(dtype)
    layer.load_from_tensors(tensors)
    layer.transform()
    num_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    return HummingLinear(layer, rows, num_bytes)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
