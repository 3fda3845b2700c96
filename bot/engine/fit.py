"""Will the model and a useful KV cache fit this GPU? Answered before anything is downloaded.

The estimate counts the weight bytes each quantization stores (16-bit embeddings and LM head
included), the KV cache of one full-length dialogue, and the headroom the engine keeps for
activations and CUDA graphs. When it does not fit, the message names what would.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine.model import ModelShape

GiB = 1024**3
# Bytes per weight of the layers' projections, scales included.
_BYTES_PER_WEIGHT = {
    "none": 2.0,
    "int4": 0.5 + 2 / 128,  # 4-bit codes + a 16-bit scale per group of 128
    "fp8": 1.0,
    "nf4": 0.5 + 1 / 64 * 0.25 + 4 / (64 * 256),  # codes + double-quantized absmax
    "fp4": 0.5 + 1 / 64 * 0.25 + 4 / (64 * 256),
    "int8": 1.0 + 4 / 5120,  # codes + a float32 scale per row (of about this width)
}
# Allocator rounding and the per-layer buffers of the quantized layers: measured loads came out
# up to 5 % above the bare byte count (H200, every format).
_SLACK = 1.05
HEADROOM_BYTES = 3 * GiB  # activations, logits, sampling buffers, CUDA graphs (as loading.py)
SMALLEST_USEFUL_CONTEXT = 4096


@dataclass(frozen=True, slots=True)
class Fit:
    fits: bool
    weights_bytes: int
    kv_bytes_per_token: int
    message: str


def weights_bytes(shape: ModelShape, quantization: str, *, float32: bool = False) -> int:
    """Bytes of the weights on the GPU in `quantization`."""
    hidden, layers = shape.hidden_size, shape.num_layers
    per_layer = hidden * (shape.q_size + 2 * shape.kv_size) + shape.q_size * hidden
    per_layer += 3 * hidden * shape.intermediate_size
    sixteen_bit = 4 if float32 else 2
    projections = (
        per_layer
        * layers
        * (sixteen_bit if quantization == "none" else _BYTES_PER_WEIGHT[quantization])
    )
    # Embeddings, LM head and norms stay 16-bit in every format.
    others = (2 * shape.vocab_size * hidden + (2 * layers + 1) * hidden) * sixteen_bit
    return int((projections + others) * _SLACK)


def check_fit(
    shape: ModelShape,
    quantization: str,
    *,
    free_bytes: int,
    max_context_tokens: int,
    kv_bytes_per_token: int,
) -> Fit:
    """Whether weights + one `max_context_tokens` dialogue fit `free_bytes`, and advice if not."""
    weights = weights_bytes(shape, quantization)
    context_bytes = max_context_tokens * kv_bytes_per_token
    needed = weights + HEADROOM_BYTES + context_bytes
    if needed <= free_bytes:
        dialogues = (free_bytes - weights - HEADROOM_BYTES) // context_bytes
        return Fit(
            True,
            weights,
            kv_bytes_per_token,
            f"{quantization} weights {weights / GiB:.1f} GiB; room for about {dialogues} "
            f"dialogues of {max_context_tokens} tokens in {free_bytes / GiB:.1f} GiB free",
        )
    advice = []
    for other in ("int4", "nf4"):
        other_weights = weights_bytes(shape, other)
        if other_weights < weights and other_weights + HEADROOM_BYTES + context_bytes <= free_bytes:
            advice.append(f'[model] quantization = "{other}"')
            break
    room = free_bytes - weights - HEADROOM_BYTES
    if room >= SMALLEST_USEFUL_CONTEXT * kv_bytes_per_token:
        tokens = room // kv_bytes_per_token // 1024 * 1024
        advice.append(f"max_context_tokens = {tokens}")
    hint = " or ".join(advice) if advice else "a GPU with more memory"
    return Fit(
        False,
        weights,
        kv_bytes_per_token,
        f"the model does not fit this GPU: {quantization} weights take {weights / GiB:.1f} GiB "
        f"and one {max_context_tokens}-token dialogue {context_bytes / GiB:.1f} GiB more (plus "
        f"{HEADROOM_BYTES / GiB:.0f} GiB of headroom), but {free_bytes / GiB:.1f} GiB are free; "
        f"try {hint}",
    )
