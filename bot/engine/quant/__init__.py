"""Weight formats: how one fused projection's weight becomes a linear map at load time.

Every quantization starts from the checkpoint's 16-bit weight (never from another quantized
form) and returns a `Linear` (bot/engine/model.py): plain (`none`), humming W4A16 (`int4`),
humming W8A16 e4m3 (`fp8`), or bitsandbytes (`nf4`, `fp4`, `int8`). A checkpoint quantized
offline (GPTQ, AWQ) is the exception: prequantized.py reads its 4-bit weights as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from bot.engine.model import Linear
from bot.engine.quant.fp8 import dequantize_fp8, quantize_fp8
from bot.engine.quant.int4 import dequantize_int4, quantize_int4
from bot.engine.quant.plain import PlainLinear

LinearFactory = Callable[[torch.Tensor, torch.Tensor | None], Linear]
Kernels = Literal["device", "reference"]

BITSANDBYTES = ("nf4", "fp4", "int8")
HUMMING = ("int4", "fp8")


def linear_factory(quantization: str, kernels: Kernels = "device") -> LinearFactory:
    """How a fused 16-bit weight (and bias) becomes a Linear in `quantization`.

    `kernels="reference"` keeps int4 and fp8 as their dequantized weights in a plain matmul:
    the same function as the GPU kernels, runnable anywhere (tests, the GPU check's reference).
    """
    if quantization == "none":
        return PlainLinear
    if kernels == "reference":
        if quantization == "int4":
            return lambda w, b: PlainLinear(dequantize_int4(*quantize_int4(w)), b)
        if quantization == "fp8":
            return lambda w, b: PlainLinear(dequantize_fp8(*quantize_fp8(w)), b)
        raise ValueError(f"{quantization} has no reference kernels")
    if quantization in HUMMING:
        from bot.engine.quant import humming

        return humming.int4_linear if quantization == "int4" else humming.fp8_linear
    if quantization in BITSANDBYTES:
        from bot.engine.quant.bnb import bnb_linear

        return lambda w, b: bnb_linear(w, b, quantization)
    raise ValueError(f"unknown quantization {quantization!r}")
