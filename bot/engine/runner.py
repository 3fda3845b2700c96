"""ModelRunner: the only code that runs the model; a slot-based KV cache and batched decode steps.

It drives the weights of a loaded Llama-family causal LM (Qwen2, Llama, Mistral: embed -> layers of
[norm, attention with q/k/v/o projections, norm, MLP] -> norm -> lm_head) with its own forward pass,
because transformers' generic forward cannot decode rows at different positions in one CUDA graph.
The projections and MLPs stay the model's own modules, so bitsandbytes' 4-bit layers work unchanged.

Every request owns one slot of a static KV cache. Active requests always occupy slots 0..n-1
(a leaving request's place is filled by moving the last one), so a decode step over the first b
slots is a plain view of the cache and one captured CUDA graph per (batch bucket, length bucket)
replays it with a single launch.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bot.engine.base import EngineError

log = logging.getLogger(__name__)

# Batch sizes that get their own captured decode graph; a step pads up to the next one.
_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)
_MIN_LENGTH_BUCKET = 256


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """Prompt tokens for one slot, starting at `start` (earlier positions are already cached)."""

    slot: int
    token_ids: Sequence[int]
    start: int = 0


@dataclass(frozen=True, slots=True)
class CacheShape:
    """How the KV cache is laid out: `num_slots` requests of up to `slot_tokens` tokens each."""

    num_slots: int
    slot_tokens: int


def kv_bytes_per_token(config: object, dtype: torch.dtype) -> int:
    """KV cache bytes one token costs across all layers."""
    layers, kv_heads, head_dim = _shape_of(config)[1:4]
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def _shape_of(config: object) -> tuple[int, int, int, int]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, config.num_hidden_layers, kv_heads, head_dim


class ModelRunner:
    """Prefill and batched decode over a slot KV cache; only the engine's worker thread calls it."""

    def __init__(
        self,
        model: nn.Module,
        cache_shape: CacheShape,
        *,
        use_cuda_graphs: bool = True,
        seed: int = 0,
    ) -> None:
        self._check_architecture(model)
        self.model = model
        self.config = model.config
        self.cache_shape = cache_shape
        self.device = model.lm_head.weight.device
        self.dtype = model.model.embed_tokens.weight.dtype
        self.num_heads, self.num_layers, self.num_kv_heads, self.head_dim = _shape_of(self.config)
        self.group = self.num_heads // self.num_kv_heads
        inner = model.model
        self.embed = inner.embed_tokens
        self.layers = list(inner.layers)
        # RMSNorm as one fused kernel: the model's own module takes about eight small ones, which
        # twice per layer cost a single stream ~5 % of its step time.
        self.input_norms = [_fused_rms_norm(layer.input_layernorm) for layer in self.layers]
        self.post_attention_norms = [
            _fused_rms_norm(layer.post_attention_layernorm) for layer in self.layers
        ]
        self.norm = _fused_rms_norm(inner.norm)
        self.lm_head = model.lm_head
        self.rotary = inner.rotary_emb
        # CUDA graphs replay the default generator's Philox state safely; a private generator
        # would have to be registered with every graph.
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
            self.generator: torch.Generator | None = None
        else:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)

        slots, tokens = cache_shape.num_slots, cache_shape.slot_tokens
        # One column past each slot's end is scratch space for the padding rows of a decode step
        # (see _decode_step); attention never reads it.
        self._parked = tokens
        kv_shape = (self.num_layers, slots, self.num_kv_heads, tokens + 1, self.head_dim)
        try:
            self.k_cache = torch.zeros(kv_shape, dtype=self.dtype, device=self.device)
            self.v_cache = torch.zeros(kv_shape, dtype=self.dtype, device=self.device)
        except torch.OutOfMemoryError:
            raise EngineError(
                f"not enough GPU memory for a KV cache of {slots} x {tokens} tokens: "
                "lower [engine] max_batch_size or kv_cache_tokens"
            ) from None

        # Per-slot decode state, kept on the device so a step needs no host->device copies.
        self.input_ids = torch.zeros(slots, dtype=torch.long, device=self.device)
        # A slot that is not decoding is parked at the scratch column (or past it).
        self.positions = torch.full((slots,), self._parked, dtype=torch.long, device=self.device)
        self.temperature = torch.ones(slots, dtype=torch.float32, device=self.device)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=self.device)
        self.batch_buckets = (*(b for b in _BATCH_BUCKETS if b < slots), slots)
        self.length_buckets = _length_buckets(tokens)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._use_graphs = use_cuda_graphs and self.device.type == "cuda"

    @staticmethod
    def _check_architecture(model: nn.Module) -> None:
        inner = getattr(model, "model", None)
        layer = getattr(inner, "layers", [None])[0]
        attn = getattr(layer, "self_attn", None)
        needed = [
            inner,
            getattr(inner, "embed_tokens", None),
            getattr(inner, "norm", None),
            getattr(inner, "rotary_emb", None),
            getattr(model, "lm_head", None),
            attn,
            getattr(layer, "mlp", None),
        ]
        needed += [getattr(attn, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
        if any(part is None for part in needed) or (
            getattr(model.config, "sliding_window", None)
            and getattr(model.config, "use_sliding_window", False)
        ):
            raise EngineError(
                f"unsupported model architecture {type(model).__name__}: the engine serves "
                "Llama-family decoders (Qwen2, Llama, Mistral without sliding window)"
            )

    # ---- public operations -------------------------------------------------------------

    def prefill(
        self, slot: int, token_ids: Sequence[int], start: int, *, is_last_chunk: bool
    ) -> torch.Tensor | None:
        """Write the KV of `token_ids` (positions start..) into `slot`; on the last chunk return
        the logits row for the next token (1 x vocab, float32)."""
        logits = self.prefill_many([PrefillChunk(slot, token_ids, start)])
        return logits if is_last_chunk else None

    @torch.inference_mode()
    def prefill_many(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        """Prefill several prompts (or prompt chunks) in one forward pass; returns the logits of
        each chunk's last token (len(chunks) x vocab, float32).

        The chunks are packed into one sequence: the projections and MLPs, where the weights
        are read (and, in 4-bit, dequantized), run once for all of them; only attention runs
        per chunk.
        """
        ids = torch.tensor(
            [t for chunk in chunks for t in chunk.token_ids], dtype=torch.long, device=self.device
        )
        positions = torch.cat(
            [torch.arange(c.start, c.start + len(c.token_ids)) for c in chunks]
        ).to(self.device)
        slots = torch.cat(
            [torch.full((len(c.token_ids),), c.slot, dtype=torch.long) for c in chunks]
        ).to(self.device)
        total = ids.shape[0]
        hidden = self.embed(ids)[None]
        cos, sin = self._rotary(hidden, positions[None])
        masks = [self._chunk_mask(c) for c in chunks]
        for index, layer in enumerate(self.layers):
            residual = hidden
            x = self.input_norms[index](hidden)
            q, k, v = self._project_qkv(layer.self_attn, x, cos, sin)
            # [1, heads, T, dim] -> per-token rows [T, heads, dim] written at (slot, position).
            self.k_cache[index, slots, :, positions] = k[0].transpose(0, 1)
            self.v_cache[index, slots, :, positions] = v[0].transpose(0, 1)
            outputs = []
            offset = 0
            for chunk, mask in zip(chunks, masks, strict=True):
                num = len(chunk.token_ids)
                end = chunk.start + num
                keys = self.k_cache[index, chunk.slot : chunk.slot + 1, :, :end]
                values = self.v_cache[index, chunk.slot : chunk.slot + 1, :, :end]
                out = F.scaled_dot_product_attention(
                    q[:, :, offset : offset + num],
                    keys.repeat_interleave(self.group, dim=1),
                    values.repeat_interleave(self.group, dim=1),
                    attn_mask=mask,
                    is_causal=mask is None and num > 1,
                )
                outputs.append(out)
                offset += num
            out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
            hidden = residual + layer.self_attn.o_proj(out.transpose(1, 2).reshape(1, total, -1))
            hidden = hidden + layer.mlp(self.post_attention_norms[index](hidden))
        ends = torch.tensor(
            list(itertools.accumulate(len(c.token_ids) for c in chunks)), device=self.device
        )
        last = self.norm(hidden[0, ends - 1])
        return self.lm_head(last).float()

    def _chunk_mask(self, chunk: PrefillChunk) -> torch.Tensor | None:
        """None (plain causal) for a chunk at position 0; else attend to all earlier positions."""
        if chunk.start == 0:
            return None
        end = chunk.start + len(chunk.token_ids)
        query_pos = torch.arange(chunk.start, end, device=self.device)
        return torch.arange(end, device=self.device)[None, :] <= query_pos[:, None]

    def sample_first(self, logits: torch.Tensor, slot: int) -> torch.Tensor:
        """Sample the first generated token of `slot` from its prefill logits (stays on device)."""
        return self.sample_rows(logits, [slot])

    def sample_rows(self, logits: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
        """Sample one token per logits row with the sampling settings of the matching slot."""
        with torch.inference_mode():
            index = torch.tensor(list(slots), dtype=torch.long, device=self.device)
            return _sample(logits, self.temperature[index], self.top_p[index], self.generator)

    def activate(self, slot: int, first_token: torch.Tensor, position: int) -> None:
        """Prepare `slot` to decode: its next input token and where that token's KV goes."""
        with torch.inference_mode():
            self.input_ids[slot] = first_token.reshape(())
            self.positions[slot] = position

    def set_sampling(self, slot: int, temperature: float, top_p: float) -> None:
        """Set the sampling parameters a slot decodes with (before its prefill)."""
        with torch.inference_mode():
            self.temperature[slot] = temperature
            self.top_p[slot] = top_p

    def release(self, slot: int) -> None:
        """Park a slot that stops decoding (its cache is simply overwritten by the next user)."""
        with torch.inference_mode():
            self.positions[slot] = self._parked

    def move_slot(self, source: int, target: int, num_tokens: int) -> None:
        """Move a request's cache and decode state from `source` to `target` (compaction)."""
        with torch.inference_mode():
            self.k_cache[:, target, :, :num_tokens] = self.k_cache[:, source, :, :num_tokens]
            self.v_cache[:, target, :, :num_tokens] = self.v_cache[:, source, :, :num_tokens]
            for buffer in (self.input_ids, self.positions, self.temperature, self.top_p):
                buffer[target] = buffer[source]

    def decode(self, num_active: int, max_position: int) -> torch.Tensor:
        """One decode step for slots 0..num_active-1; returns their sampled tokens (on device).

        `max_position` is the largest position any active slot writes this step.
        """
        batch = next(b for b in self.batch_buckets if b >= num_active)
        length = next(n for n in self.length_buckets if n > max_position)
        if self._use_graphs:
            try:
                graph, output = self._graphs.get((batch, length)) or self._capture(batch, length)
            except Exception:  # e.g. a quantization kernel that cannot be captured
                log.warning("CUDA graph capture failed; decoding without graphs", exc_info=True)
                self._use_graphs = False
                self._graphs.clear()
            else:
                graph.replay()
                return output[:num_active]
        with torch.inference_mode():
            return self._decode_step(num_active, max_position + 1)[:num_active]

    def warm_up(self) -> float:
        """Capture every decode graph now (not on a user's first message); returns seconds."""
        started = time.perf_counter()
        if self._use_graphs:
            try:
                # Largest first, so smaller graphs reuse the memory pool the big ones allocated.
                for batch in reversed(self.batch_buckets):
                    for length in reversed(self.length_buckets):
                        self._capture(batch, length)
                torch.cuda.synchronize(self.device)
            except Exception:
                log.warning("CUDA graph capture failed; decoding without graphs", exc_info=True)
                self._use_graphs = False
                self._graphs.clear()
        return time.perf_counter() - started

    # ---- internals ---------------------------------------------------------------------

    def _rotary(
        self, hidden: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin for `positions`, shaped to broadcast over heads.

        Rotary embedding is x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1]. Folding
        the minus into sin once per step makes it x*cos + roll(x)*signed_sin: three kernels per
        tensor and layer instead of six.
        """
        cos, sin = self.rotary(hidden, positions)
        half = self.head_dim // 2
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.unsqueeze(1), signed_sin.unsqueeze(1)

    def _project_qkv(
        self, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, num, _ = x.shape
        q = attn.q_proj(x).view(batch, num, self.num_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, num, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(batch, num, self.num_kv_heads, self.head_dim).transpose(1, 2)
        half = self.head_dim // 2
        q = torch.addcmul(q * cos, q.roll(half, dims=-1), signed_sin)
        k = torch.addcmul(k * cos, k.roll(half, dims=-1), signed_sin)
        return q, k, v

    def _decode_step(self, batch: int, length: int) -> torch.Tensor:
        """Decode slots 0..batch-1 attending to the first `length` cache positions."""
        ids = self.input_ids[:batch]
        positions = self.positions[:batch]
        # A captured graph decodes a whole batch bucket: rows past the active ones are free slots
        # or the slot a long prompt is being prefilled into, chunk by chunk, between steps. They
        # are parked (position >= slot end > length), so their keys go to the scratch column and
        # the prefilled prompt stays intact.
        write_at = torch.where(positions < length, positions, self._parked)
        rows = torch.arange(batch, device=self.device)
        hidden = self.embed(ids)[:, None]
        cos, sin = self._rotary(hidden, positions[:, None])
        key_pos = torch.arange(length, device=self.device)
        mask = (key_pos[None, :] <= positions[:, None])[:, None, None, :]
        for index, layer in enumerate(self.layers):
            residual = hidden
            x = self.input_norms[index](hidden)
            q, k, v = self._project_qkv(layer.self_attn, x, cos, sin)
            self.k_cache[index, rows, :, write_at] = k[:, :, 0]
            self.v_cache[index, rows, :, write_at] = v[:, :, 0]
            keys = self.k_cache[index, :batch, :, :length]
            values = self.v_cache[index, :batch, :, :length]
            # Grouped-query attention without copying the cache: a kv head's query heads act
            # as that head's query rows.
            q = q.reshape(batch, self.num_kv_heads, self.group, self.head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            hidden = residual + layer.self_attn.o_proj(out.reshape(batch, 1, -1))
            hidden = hidden + layer.mlp(self.post_attention_norms[index](hidden))
        logits = self.lm_head(self.norm(hidden))[:, 0].float()
        tokens = _sample(logits, self.temperature[:batch], self.top_p[:batch], self.generator)
        # Feed the sampled tokens straight back as the next inputs, on the device.
        self.input_ids[:batch] = tokens
        self.positions[:batch] += 1
        return tokens

    def _capture(self, batch: int, length: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        key = (batch, length)
        if key in self._graphs:
            return self._graphs[key]
        # Capture runs the step for real: save and restore the state it advances.
        saved = (self.input_ids.clone(), self.positions.clone())
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            self._decode_step(batch, length)  # warm-up: lazy inits happen outside the capture
            self.positions.copy_(saved[1])
            self.input_ids.copy_(saved[0])
            graph = torch.cuda.CUDAGraph()
            pool = next(iter(self._graphs.values()))[0].pool() if self._graphs else None
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                output = self._decode_step(batch, length)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.input_ids.copy_(saved[0])
        self.positions.copy_(saved[1])
        self._graphs[key] = (graph, output)
        return graph, output


def _length_buckets(slot_tokens: int) -> tuple[int, ...]:
    buckets = []
    size = _MIN_LENGTH_BUCKET
    while size < slot_tokens:
        buckets.append(size)
        size *= 2
    buckets.append(slot_tokens)
    return tuple(buckets)


def _fused_rms_norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module` as one F.rms_norm call where it is a plain RMSNorm (weight * x / rms(x))."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", None)
    # Llama-family norms are plain; anything else (e.g. Gemma's 1 + weight) keeps its own code.
    if weight is None or eps is None or not type(module).__name__.endswith("RMSNorm"):
        return module
    shape = (weight.shape[0],)
    return lambda x: F.rms_norm(x, shape, weight, eps)


# Sampling draws from the most likely SAMPLING_CANDIDATES tokens of each row. Sorting the whole
# 152k vocabulary every step cost more than the rest of sampling together; a nucleus wider than
# this is vanishingly rare with top_p < 1 and sane temperatures (transformers' generate() even
# cuts at top_k=50 by default, the notebook's way included).
SAMPLING_CANDIDATES = 256


def _sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per-row temperature + nucleus sampling, no host sync (greedy where temperature is 0)."""
    greedy = logits.argmax(dim=-1)
    scaled = logits / temperature.clamp_min(1e-5)[:, None]
    top, order = scaled.topk(min(SAMPLING_CANDIDATES, scaled.shape[-1]), dim=-1)  # descending
    # Normalized over the whole vocabulary, so top_p means the same as with a full sort.
    sorted_probs = torch.exp(top - scaled.logsumexp(dim=-1, keepdim=True))
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before > top_p[:, None], 0.0)
    # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p, with no multinomial sync.
    noise = torch.empty_like(sorted_probs).exponential_(1.0, generator=generator)
    choice = (sorted_probs / noise).argmax(dim=-1, keepdim=True)
    sampled = order.gather(-1, choice)[:, 0]
    return torch.where(temperature > 0, sampled, greedy)


def default_cache_shape(
    *, max_context_tokens: int, kv_budget_tokens: int, max_batch_size: int
) -> CacheShape:
    """Split a KV budget into slots: long enough for a full context when the budget allows."""
    if kv_budget_tokens < 1:
        raise EngineError("no memory left for the KV cache after loading the model")
    if max_batch_size > 0:
        slots = max_batch_size
    else:
        slots = max(1, min(64, kv_budget_tokens // max_context_tokens))
    slot_tokens = min(max_context_tokens, kv_budget_tokens // slots)
    # Keep slot lengths a multiple of 64 so length buckets stay aligned.
    slot_tokens = max(64, slot_tokens // 64 * 64) if slot_tokens >= 64 else slot_tokens
    return CacheShape(num_slots=slots, slot_tokens=max(1, slot_tokens))


def round_up(value: int, multiple: int) -> int:
    """`value` rounded up to a multiple of `multiple`."""
    return int(math.ceil(value / multiple) * multiple)
