"""The decoder the runner drives: its shape, and its weights as fused (maybe quantized) layers.

The runner needs only this: per layer two RMSNorm weights and four linear maps (QKV fused into
one, O, gate/up fused into one, down), plus the embedding, the final norm, the LM head and the
rotary tables. Loading (bot/engine/loading.py) builds it straight from safetensors, a layer at a
time; `DecoderWeights.from_hf_model` builds it from a transformers model (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bot.engine.base import EngineError

# Families whose decoder layer is exactly: RMSNorm -> attention (q/k/v/o, rotary, GQA) -> residual
# -> RMSNorm -> SiLU-gated MLP -> residual. Qwen2 adds q/k/v biases.
SUPPORTED_MODEL_TYPES = frozenset({"qwen2", "llama", "mistral"})

Linear = Callable[[torch.Tensor], torch.Tensor]
"""A linear map on [rows, in] -> [rows, out]: plain, bitsandbytes or humming (bot/engine/quant)."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The sizes of a Llama-family decoder, read from its config."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    has_qkv_bias: bool

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """The shape of `config`; EngineError for an architecture the runner cannot drive."""
        model_type = getattr(config, "model_type", "")
        uses_window = getattr(config, "sliding_window", None) and getattr(
            config, "use_sliding_window", model_type == "mistral"
        )
        if (
            model_type not in SUPPORTED_MODEL_TYPES
            or getattr(config, "hidden_act", "silu") != "silu"
            or uses_window
        ):
            raise EngineError(
                f"unsupported model architecture {model_type or type(config).__name__}: the "
                "engine serves Llama-family decoders (Qwen2, Llama, Mistral without sliding window)"
            )
        heads = config.num_attention_heads
        return cls(
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            rms_norm_eps=config.rms_norm_eps,
            has_qkv_bias=model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
        )

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """KV-cache bytes one token costs across all layers."""
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.kv_size * element


@dataclass(slots=True)
class LayerWeights:
    """One decoder layer, projections fused: qkv -> [q | k | v], gate_up -> [gate | up]."""

    input_norm: torch.Tensor
    qkv: Linear
    o: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


@dataclass(slots=True)
class DecoderWeights:
    """Everything the runner reads; `dtype` is the activations' (compute) dtype."""

    shape: ModelShape
    config: Any
    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    lm_head: Linear
    dtype: torch.dtype
    device: torch.device
    quantization: str = "none"

    @classmethod
    def from_hf_model(cls, model: nn.Module) -> DecoderWeights:
        """Plain weights taken from a loaded transformers model (fused; no copies kept)."""
        from bot.engine.quant.plain import PlainLinear  # the plain maps; no optional imports

        shape = ModelShape.from_config(model.config)
        inner = getattr(model, "model", None)
        if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
            raise EngineError(
                f"unsupported model architecture {type(model).__name__}: the engine serves "
                "Llama-family decoders (Qwen2, Llama, Mistral without sliding window)"
            )
        layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv_bias = None
            if attn.q_proj.bias is not None:
                qkv_bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            layers.append(
                LayerWeights(
                    input_norm=layer.input_layernorm.weight.detach(),
                    qkv=PlainLinear(
                        torch.cat(
                            [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
                        ).detach(),
                        None if qkv_bias is None else qkv_bias.detach(),
                    ),
                    o=PlainLinear(attn.o_proj.weight.detach()),
                    post_norm=layer.post_attention_layernorm.weight.detach(),
                    gate_up=PlainLinear(
                        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
                    ),
                    down=PlainLinear(mlp.down_proj.weight.detach()),
                )
            )
        embed = inner.embed_tokens.weight.detach()
        return cls(
            shape=shape,
            config=model.config,
            embed=embed,
            layers=layers,
            norm=inner.norm.weight.detach(),
            lm_head=PlainLinear(model.lm_head.weight.detach()),
            dtype=embed.dtype,
            device=embed.device,
        )


def rotary_tables(
    config: Any, num_positions: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position, [num_positions, head_dim // 2] float32.

    Computed by transformers' own rotary embedding, so every RoPE variant its config names
    (default, linear, dynamic, YaRN, llama3) and its attention scaling come out as the model was
    trained; the two halves of the head use the same angles (the rotate-half layout).
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(config)
    positions = torch.arange(num_positions)[None]
    cos, sin = rotary(torch.empty((), dtype=torch.float32), positions)
    half = cos.shape[-1] // 2
    return (
        cos[0, :, :half].contiguous().to(device),
        sin[0, :, :half].contiguous().to(device),
    )
