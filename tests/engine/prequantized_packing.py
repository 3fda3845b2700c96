"""Write GPTQ-, AWQ- and compressed-tensors-format checkpoints from known 4-bit weights.

The packing here follows each format's own writer (AutoGPTQ, AutoAWQ, compressed-tensors):
nibble i of an int32 at bits 4i..4i+3, eight codes a word, AWQ in its interleaved order, GPTQ's
classic format storing zero - 1. It is written apart from the loader's unpacking (a loop over
nibbles in int64, not shifts and masks) so that the two check each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.support.models import save_model_folder

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's order_map: nibble i <- element [i]
SEQUENTIAL = tuple(range(8))
PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@dataclass(frozen=True)
class KnownInt4:
    """One linear's 4-bit weight: codes [N, K], zeros [N, G] (0..15), float16 scales [N, G]."""

    codes: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]

    def dequantized(self) -> torch.Tensor:
        """scales x (codes - zeros), in float32 (exact: 16-bit scale times a small integer)."""
        g = self.group_size
        centred = self.codes.float() - self.zeros.float().repeat_interleave(g, dim=1)
        return self.scales.float().repeat_interleave(g, dim=1) * centred


def random_int4(
    rows: int,
    columns: int,
    group_size: int,
    generator: torch.Generator,
    *,
    symmetric: bool = False,
) -> KnownInt4:
    """Random codes and scales; zeros 1..15 (GPTQ's classic format cannot store 0), or 8."""
    groups = columns // group_size
    codes = torch.randint(0, 16, (rows, columns), generator=generator)
    if symmetric:
        zeros = torch.full((rows, groups), 8)
    else:
        zeros = torch.randint(1, 16, (rows, groups), generator=generator)
    scales = (0.002 + 0.004 * torch.rand(rows, groups, generator=generator)).half()
    return KnownInt4(codes=codes, zeros=zeros, scales=scales)


def pack_last(values: torch.Tensor, order: tuple[int, ...] = SEQUENTIAL) -> torch.Tensor:
    """int32 [..., C / 8] from codes [..., C]: nibble i of word j holds code 8 j + order[i]."""
    grouped = values.to(torch.int64).reshape(*values.shape[:-1], -1, 8)
    packed = torch.zeros(grouped.shape[:-1], dtype=torch.int64, device=values.device)
    for nibble, element in enumerate(order):
        packed += (grouped[..., element] & 0xF) * 16**nibble
    wrapped = torch.where(packed >= 2**31, packed - 2**32, packed)  # as the int32 it is stored
    return wrapped.to(torch.int32).contiguous()


def gptq_tensors(known: KnownInt4, *, v1: bool = True) -> dict[str, torch.Tensor]:
    """qweight [K/8, N] packed along K, qzeros [G, N/8] along N (v1: zero - 1), scales, g_idx."""
    columns = known.codes.shape[1]
    return {
        "qweight": pack_last(known.codes).t().contiguous(),
        "qzeros": pack_last(known.zeros.t() - (1 if v1 else 0)),
        "scales": known.scales.t().contiguous(),
        "g_idx": (torch.arange(columns, device=known.codes.device) // known.group_size).int(),
    }


def awq_tensors(known: KnownInt4) -> dict[str, torch.Tensor]:
    """qweight [K, N/8] and qzeros [G, N/8] packed along N in AWQ's order, scales [G, N]."""
    return {
        "qweight": pack_last(known.codes.t(), AWQ_PACK_ORDER),
        "qzeros": pack_last(known.zeros.t(), AWQ_PACK_ORDER),
        "scales": known.scales.t().contiguous(),
    }


def compressed_tensors(known: KnownInt4) -> dict[str, torch.Tensor]:
    """pack-quantized: weight_packed [N, K/8] of value + 8 along K, weight_scale [N, G]."""
    if not bool((known.zeros == 8).all()):
        raise ValueError("the compressed-tensors writer here is symmetric only")
    return {
        "weight_packed": pack_last(known.codes),
        "weight_scale": known.scales.contiguous(),
        "weight_shape": torch.tensor(list(known.codes.shape)),
    }


def gptq_config(group_size: int, *, v1: bool = True, **overrides: Any) -> dict[str, Any]:
    config = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": group_size,
        "desc_act": False,
        "sym": False,
        "checkpoint_format": "gptq" if v1 else "gptq_v2",
    }
    return {**config, **overrides}


def awq_config(group_size: int, **overrides: Any) -> dict[str, Any]:
    config = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
    }
    return {**config, **overrides}


def compressed_config(group_size: int, **weight_overrides: Any) -> dict[str, Any]:
    weights = {
        "num_bits": 4,
        "type": "int",
        "symmetric": True,
        "strategy": "group",
        "group_size": group_size,
        "actorder": None,
    }
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {**weights, **weight_overrides},
                "input_activations": None,
                "format": "pack-quantized",
            }
        },
        "ignore": ["lm_head"],
    }


def write_prequantized(
    model: Any,
    tokenizer: Any,
    folder: Path,
    quantization_config: dict[str, Any],
    *,
    seed: int = 0,
) -> tuple[Any, dict[str, KnownInt4]]:
    """Save `model` as a pre-quantized checkpoint with random known 4-bit projections.

    Returns a copy of `model` whose projections are those weights dequantized (what the
    loaded checkpoint must compute), and the known weights by tensor prefix.
    """
    method = quantization_config["quant_method"]
    if method == "compressed-tensors":
        weights = quantization_config["config_groups"]["group_0"]["weights"]
        group_size, symmetric = weights["group_size"], True
    else:
        group_size = quantization_config["group_size"]
        symmetric = bool(quantization_config.get("sym", False))
    v1 = quantization_config.get("checkpoint_format", "gptq") == "gptq"
    generator = torch.Generator().manual_seed(seed)
    save_model_folder(model, tokenizer, folder)
    reference = type(model)(model.config).eval()
    reference.load_state_dict(model.state_dict())
    reference.generation_config = model.generation_config
    tensors = {
        name: tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if not any(name.endswith(f"{p}.weight") for p in PROJECTIONS)
    }
    known_by_name: dict[str, KnownInt4] = {}
    for index, layer in enumerate(reference.model.layers):
        for projection in PROJECTIONS:
            module = layer.get_submodule(projection)
            rows, columns = module.weight.shape
            known = random_int4(rows, columns, group_size, generator, symmetric=symmetric)
            prefix = f"model.layers.{index}.{projection}"
            known_by_name[prefix] = known
            with torch.no_grad():
                module.weight.copy_(known.dequantized())
            packed = {
                "gptq": lambda k: gptq_tensors(k, v1=v1),
                "awq": awq_tensors,
                "compressed-tensors": compressed_tensors,
            }[method](known)
            tensors.update({f"{prefix}.{key}": value for key, value in packed.items()})
    for stale in folder.glob("model*.safetensors*"):
        stale.unlink()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["quantization_config"] = quantization_config
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return reference, known_by_name
