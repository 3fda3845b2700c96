"""bitsandbytes linear maps (nf4, fp4, LLM.int8), quantized from the fused 16-bit weight."""

from __future__ import annotations

import torch


class BitsAndBytesLinear:
    """A bitsandbytes layer as a Linear."""

    def __init__(self, layer: torch.nn.Module, out_features: int) -> None:
        self._layer = layer
        self.out_features = out_features
        self.num_bytes = sum(
            t.numel() * t.element_size() for t in (*layer.parameters(), *layer.buffers())
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._layer(x)


def bnb_linear(weight: torch.Tensor, bias: torch.Tensor | None, kind: str) -> BitsAndBytesLinear:
    """`kind` nf4 / fp4 (double-quantized, computing in the weight's dtype) or int8."""
    import bitsandbytes as bnb

    rows, columns = weight.shape
    device = weight.device
    if kind == "int8":
        layer = bnb.nn.Linear8bitLt(
            columns, rows, bias=bias is not None, has_fp16_weights=False, threshold=6.0
        )
        layer.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False)
    else:
        # nf4 + double quantization + a 16-bit compute dtype: the notebook's bare load_in_4bit
        # gave fp4 with float32 compute, the slow path.
        layer = bnb.nn.Linear4bit(
            columns,
            rows,
            bias=bias is not None,
            compute_dtype=weight.dtype,
            compress_statistics=True,
            quant_type=kind,
        )
        layer.weight = bnb.nn.Params4bit(
            weight, requires_grad=False, quant_type=kind, compress_statistics=True
        )
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias, requires_grad=False)
    return BitsAndBytesLinear(layer.to(device), rows)  # moving to the GPU quantizes
