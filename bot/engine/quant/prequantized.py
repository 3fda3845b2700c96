"""Pre-quantized 4-bit checkpoints (GPTQ, AWQ, compressed-tensors): read as they are.

A checkpoint quantized offline (GPTQ or AWQ calibrate their rounding on data) is better than
rounding the 16-bit weights at load, and it is a quarter of the download. Its config.json says
how it is stored (`quantization_config`); this module checks that our int4 path can run it
(4 bits, groups of 32, 64 or 128, no act-order), unpacks each linear's packed tensors into
codes, scales and zero points (`Int4Weights`), fuses QKV and gate/up along N like the 16-bit
path, and hands them to humming unchanged: the weights are never dequantized and re-rounded.
With quantization "none" they are dequantized to the compute dtype instead (exact in float32).

Storage, per linear `<name>` (N outputs, K inputs, G = K / group groups, 8 codes an int32):
  GPTQ: qweight [K/8, N] packed along K; qzeros [G, N/8] packed along N, stored as zero - 1 in
        the classic ("gptq", v1) format and as the zero in "gptq_v2"; scales [G, N]; g_idx.
  AWQ (GEMM): qweight [K, N/8] and qzeros [G, N/8] packed along N in the nibble order
        0 2 4 6 1 3 5 7; scales [G, N]; zeros stored as they are.
  compressed-tensors pack-quantized: weight_packed [N, K/8] packed along K, code = value + 8;
        weight_scale [N, G]; symmetric only.
Nibble i of an int32 holds bits 4i..4i+3 (least significant first) in all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from bot.engine.base import EngineError
from bot.engine.model import Linear
from bot.engine.quant import Kernels
from bot.engine.quant.int4 import ZERO, Int4Weights
from bot.engine.quant.plain import PlainLinear

Method = Literal["gptq", "awq", "compressed-tensors"]
SUPPORTED_GROUP_SIZES = (32, 64, 128)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AWQ's nibble i holds the pack's element AWQ_ORDER[i]
_KEY = "quantization_config"

PrequantizedFactory = Callable[[Int4Weights, torch.Tensor | None], Linear]


class TensorSource(Protocol):
    """A checkpoint's tensors by name (the loader's lazily opened safetensors)."""

    def has(self, name: str) -> bool: ...

    def get(self, name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class PrequantizedFormat:
    """How a checkpoint stores its 4-bit linears."""

    method: Method
    group_size: int
    zero_offset: int = 0  # added to stored zero points: 1 for GPTQ's classic v1 format

    def describe(self) -> str:
        name = {"gptq": "GPTQ", "awq": "AWQ", "compressed-tensors": "compressed-tensors"}
        return f"{name[self.method]} int4, group {self.group_size}"


def detect_format(config: Any) -> PrequantizedFormat | None:
    """The checkpoint's 4-bit format, None for a 16-bit checkpoint; EngineError naming the
    `quantization_config` key when it is quantized in a way the int4 path cannot run."""
    raw = getattr(config, _KEY, None)
    if raw is None:
        return None
    values: Mapping[str, Any] = raw if isinstance(raw, Mapping) else raw.to_dict()
    method = values.get("quant_method")
    if method == "gptq":
        return _gptq_format(values)
    if method == "awq":
        return _awq_format(values)
    if method == "compressed-tensors":
        return _compressed_format(values)
    raise _unsupported(
        f"{_KEY}.quant_method = {method!r}",
        'only "gptq", "awq" and "compressed-tensors" (int4) checkpoints load as they are; '
        "use the model's 16-bit checkpoint",
    )


def check_quantization(fmt: PrequantizedFormat, configured: str, resolved: str) -> None:
    """A pre-quantized checkpoint runs as int4 or, dequantized, as "none"; nothing else."""
    if resolved in ("int4", "none"):
        return
    how = (
        f'[model] quantization = "auto" chose {resolved!r} on this machine (see the log for why)'
        if configured == "auto"
        else f"[model] quantization = {configured!r}"
    )
    raise EngineError(
        f"{how}, but the checkpoint is pre-quantized ({fmt.describe()}): it loads as is "
        'with quantization "int4" (humming, needs a CUDA GPU), or dequantized to 16 bits with '
        '"none"; re-quantizing it would round twice'
    )


def prequantized_factory(quantization: str, kernels: Kernels = "device") -> PrequantizedFactory:
    """How read 4-bit weights become a Linear: humming as they are, else dequantized.

    "none" and the reference kernels compute with the dequantized weight (the same function
    the GPU kernel computes, runnable anywhere).
    """
    if quantization == "int4" and kernels == "device":
        from bot.engine.quant.humming import prequantized_int4_linear

        return prequantized_int4_linear
    if quantization in ("int4", "none"):
        return lambda weights, bias: PlainLinear(weights.dequantize(), bias)
    raise ValueError(f"a pre-quantized checkpoint cannot load as {quantization!r}")


def read_fused(
    checkpoint: TensorSource,
    fmt: PrequantizedFormat,
    prefix: str,
    parts: tuple[str, ...],
    *,
    with_bias: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Int4Weights, torch.Tensor | None]:
    """The parts' 4-bit weights fused along N (and their biases, in `dtype`)."""
    source = _OnDevice(checkpoint, device)
    weights = []
    for part in parts:
        name = f"{prefix}.{part}"
        if checkpoint.has(f"{name}.weight"):
            raise EngineError(
                f"the checkpoint leaves {name} unquantized ({name}.weight); a pre-quantized "
                "checkpoint loads only when every projection is 4-bit"
            )
        weights.append(_READERS[fmt.method](source, name, fmt, dtype))
    fused = Int4Weights.concat(weights)
    bias = None
    if with_bias:
        bias = torch.cat([source.get(f"{prefix}.{part}.bias").to(dtype) for part in parts])
    return fused, bias


def unpack_int32(packed: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., 8 C] from int32 [..., C], nibble i of each int32 at position i."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    nibbles = (packed.to(torch.int32)[..., None] >> shifts) & 0xF  # the mask drops sign bits
    return nibbles.to(torch.uint8).reshape(*packed.shape[:-1], packed.shape[-1] * 8)


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., 8 C] from AWQ's interleaved int32 [..., C]."""
    nibbles = unpack_int32(packed).reshape(*packed.shape, 8)
    ordered = torch.empty_like(nibbles)
    ordered[..., list(AWQ_ORDER)] = nibbles  # nibble i goes to element AWQ_ORDER[i]
    return ordered.reshape(*packed.shape[:-1], packed.shape[-1] * 8)


# -- formats


class _OnDevice:
    """The checkpoint's tensors moved to the load device (GPU unpacking is elementwise)."""

    def __init__(self, checkpoint: TensorSource, device: torch.device) -> None:
        self._checkpoint = checkpoint
        self._device = device

    def has(self, name: str) -> bool:
        return self._checkpoint.has(name)

    def get(self, name: str) -> torch.Tensor:
        return self._checkpoint.get(name).to(self._device)


def _read_gptq(
    source: TensorSource, name: str, fmt: PrequantizedFormat, dtype: torch.dtype
) -> Int4Weights:
    codes = unpack_int32(source.get(f"{name}.qweight").t()).contiguous()  # [N, K]
    _check_groups(source, name, codes.shape[1], fmt.group_size)
    stored = unpack_int32(source.get(f"{name}.qzeros")).t()  # [G, N] -> [N, G]
    if fmt.zero_offset and bool((stored == 0xF).any()):
        raise EngineError(
            f"{name}.qzeros holds a zero point of 16 (stored 15 in the classic GPTQ format), "
            "which 4-bit zero points cannot hold"
        )
    zeros = (stored + fmt.zero_offset).contiguous()
    return _weights(name, codes, source.get(f"{name}.scales").t(), zeros, fmt, dtype)


def _read_awq(
    source: TensorSource, name: str, fmt: PrequantizedFormat, dtype: torch.dtype
) -> Int4Weights:
    codes = unpack_awq(source.get(f"{name}.qweight")).t().contiguous()  # [K, N] -> [N, K]
    zeros = unpack_awq(source.get(f"{name}.qzeros")).t().contiguous()  # [G, N] -> [N, G]
    return _weights(name, codes, source.get(f"{name}.scales").t(), zeros, fmt, dtype)


def _read_compressed(
    source: TensorSource, name: str, fmt: PrequantizedFormat, dtype: torch.dtype
) -> Int4Weights:
    codes = unpack_int32(source.get(f"{name}.weight_packed"))  # [N, K], already offset by 8
    return _weights(name, codes, source.get(f"{name}.weight_scale"), None, fmt, dtype)


_Reader = Callable[[TensorSource, str, PrequantizedFormat, torch.dtype], Int4Weights]
_READERS: dict[str, _Reader] = {
    "gptq": _read_gptq,
    "awq": _read_awq,
    "compressed-tensors": _read_compressed,
}


def _weights(
    name: str,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    fmt: PrequantizedFormat,
    dtype: torch.dtype,
) -> Int4Weights:
    rows, columns = codes.shape
    if scales.shape != (rows, columns // fmt.group_size) or columns % fmt.group_size:
        raise EngineError(
            f"{name}: {rows} x {columns} weights with {tuple(scales.shape)} scales do not "
            f"match {_KEY}'s group size {fmt.group_size}"
        )
    # Scales come as float16; bfloat16 compute rounds them (humming wants the activations'
    # dtype), a relative change under 2^-9, far below the 4-bit rounding itself.
    if zeros is not None and bool((zeros == ZERO).all()):
        zeros = None  # symmetric in fact: humming's kernel without zero points is faster
    return Int4Weights(codes=codes, scales=scales.to(dtype).contiguous(), zeros=zeros)


def _check_groups(source: TensorSource, name: str, columns: int, group_size: int) -> None:
    """GPTQ's g_idx must be the plain k // group (act-order permutes inputs: not supported)."""
    if not source.has(f"{name}.g_idx"):
        return  # checkpoints without act-order may leave it out
    g_idx = source.get(f"{name}.g_idx").to(torch.int64)
    expected = torch.arange(columns, device=g_idx.device) // group_size
    if not torch.equal(g_idx, expected):
        raise EngineError(
            f"{name}.g_idx reorders the input groups (act-order); load the checkpoint made "
            "without desc_act, or the 16-bit checkpoint"
        )


def _gptq_format(values: Mapping[str, Any]) -> PrequantizedFormat:
    _check_bits(values, "bits")
    if values.get("desc_act"):
        raise _unsupported(
            f"{_KEY}.desc_act = true",
            "act-order GPTQ reorders each linear's inputs, which humming cannot; use a "
            "checkpoint made with desc_act = false",
        )
    if values.get("lm_head"):
        raise _unsupported(f"{_KEY}.lm_head = true", "the LM head must stay 16-bit")
    if values.get("dynamic"):
        raise _unsupported(f"{_KEY}.dynamic", "per-module GPTQ settings do not load")
    checkpoint_format = values.get("checkpoint_format", "gptq")
    if checkpoint_format not in ("gptq", "gptq_v2"):
        raise _unsupported(
            f"{_KEY}.checkpoint_format = {checkpoint_format!r}", 'use "gptq" or "gptq_v2"'
        )
    return PrequantizedFormat(
        method="gptq",
        group_size=_group_size(values, "group_size"),
        zero_offset=1 if checkpoint_format == "gptq" else 0,
    )


def _awq_format(values: Mapping[str, Any]) -> PrequantizedFormat:
    _check_bits(values, "bits" if "bits" in values else "w_bit")
    version = str(values.get("version", "gemm")).lower()
    if version != "gemm":
        raise _unsupported(f"{_KEY}.version = {version!r}", 'only the "gemm" layout loads')
    if values.get("zero_point") is False:
        raise _unsupported(f"{_KEY}.zero_point = false", "AWQ checkpoints load with zero points")
    key = "group_size" if "group_size" in values else "q_group_size"
    return PrequantizedFormat(method="awq", group_size=_group_size(values, key))


def _compressed_format(values: Mapping[str, Any]) -> PrequantizedFormat:
    groups = values.get("config_groups") or {}
    linear = [g for g in groups.values() if "Linear" in (g.get("targets") or [])]
    if len(linear) != 1 or linear[0].get("input_activations"):
        raise _unsupported(
            f"{_KEY}.config_groups",
            "only weight-only schemes (w4a16) with one group targeting Linear load",
        )
    scheme = linear[0]
    quant_format = scheme.get("format", values.get("format"))
    if quant_format != "pack-quantized":
        raise _unsupported(f"{_KEY}.format = {quant_format!r}", 'only "pack-quantized" loads')
    weights = scheme.get("weights") or {}
    prefix = f"{_KEY}.config_groups.weights"
    _check_bits(weights, "num_bits", prefix=prefix)
    if weights.get("type", "int") != "int" or weights.get("strategy") != "group":
        raise _unsupported(
            f"{prefix}.type/strategy = {weights.get('type')!r}/{weights.get('strategy')!r}",
            'only "int" weights with the "group" strategy load',
        )
    if not weights.get("symmetric", True):
        raise _unsupported(f"{prefix}.symmetric = false", "only symmetric weights load")
    if weights.get("actorder") not in (None, "weight", "static"):
        raise _unsupported(
            f"{prefix}.actorder = {weights.get('actorder')!r}",
            "act-order by group reorders each linear's inputs, which humming cannot",
        )
    return PrequantizedFormat(
        method="compressed-tensors", group_size=_group_size(weights, "group_size", prefix=prefix)
    )


def _check_bits(values: Mapping[str, Any], key: str, *, prefix: str = _KEY) -> None:
    if values.get(key) != 4:
        raise _unsupported(f"{prefix}.{key} = {values.get(key)!r}", "only 4-bit weights load")


def _group_size(values: Mapping[str, Any], key: str, *, prefix: str = _KEY) -> int:
    size = values.get(key)
    if size not in SUPPORTED_GROUP_SIZES:
        raise _unsupported(
            f"{prefix}.{key} = {size!r}",
            f"humming's int4 path takes groups of {', '.join(map(str, SUPPORTED_GROUP_SIZES))}",
        )
    return int(size)


def _unsupported(setting: str, advice: str) -> EngineError:
    return EngineError(f"this checkpoint's config.json has {setting}: {advice}")
