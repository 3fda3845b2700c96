"""ModelRunner: the only code that runs the model; a slot KV cache and batched decode steps.

It drives a Llama-family decoder's weights (bot/engine/model.py: fused QKV and gate/up
projections, plain or quantized) with its own forward pass, because transformers' generic
forward cannot decode rows at different positions in one CUDA graph.

Every request owns one slot of a static KV cache, and a decode row names its slot, so rows can
sit in any slot and nothing is ever moved. Per-slot decode state (next input token, position,
sampling settings) stays on the device and each step feeds its sampled tokens back into it, so
the host can launch the next step before it has read this one's tokens. One captured CUDA graph
per batch bucket (and, with the torch attention fallback, per length bucket) replays a step.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from bot.engine.base import EngineError
from bot.engine.cache import CacheShape
from bot.engine.model import DecoderWeights, rotary_tables
from bot.engine.ops import LayerOps, choose_ops
from bot.engine.sampler import sample
from bot.engine.scheduler import PrefillChunk

log = logging.getLogger(__name__)

# Batch sizes that get their own captured decode graph; a step pads up to the next one.
_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)
_MIN_LENGTH_BUCKET = 256
# A packed prefill is padded up to one of these token counts. Matmul kernels are tuned (and
# humming's are compiled, about a minute each) per range of rows: a few fixed sizes, all
# compiled at warm-up, mean no user's odd-sized prompt ever waits for a compilation.
PREFILL_BUCKETS = (32, 128, 512, 1024, 2048)
_PREFILL_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
_NUM_OUTPUT_BUFFERS = 4  # host copies of step outputs in flight at once (pinned, reused)


@dataclass(frozen=True, slots=True)
class StepTokens:
    """Token ids a launched step produces, arriving on the host asynchronously."""

    host: torch.Tensor
    event: torch.cuda.Event | None
    num_prefill: int  # the first ids: one per prefill chunk that completed a prompt
    num_decode: int

    def wait(self) -> tuple[list[int], list[int]]:
        """(first tokens of completed prompts, decoded tokens), once the device has them."""
        if self.event is not None:
            self.event.synchronize()
        ids = self.host[: self.num_prefill + self.num_decode].tolist()
        return ids[: self.num_prefill], ids[self.num_prefill :]


class ModelRunner:
    """Prefill and batched decode over a slot KV cache; only the engine's worker thread calls it."""

    def __init__(
        self,
        model: DecoderWeights | nn.Module,
        cache_shape: CacheShape,
        *,
        use_cuda_graphs: bool = True,
        seed: int = 0,
        ops: LayerOps | None = None,
    ) -> None:
        weights = (
            model if isinstance(model, DecoderWeights) else DecoderWeights.from_hf_model(model)
        )
        self.weights = weights
        self.shape = weights.shape
        self.cache_shape = cache_shape
        self.device = weights.device
        self.dtype = weights.dtype
        # CUDA graphs replay the default generator's Philox state safely; a private generator
        # would have to be registered with every graph.
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
            self.generator: torch.Generator | None = None
        else:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)

        slots, tokens = cache_shape.num_slots, cache_shape.slot_tokens
        shape = self.shape
        # One position past each slot's end is scratch space for the torch ops' padding rows.
        kv_shape = (shape.num_layers, slots, shape.num_kv_heads, tokens + 1, shape.head_dim)
        try:
            self.k_cache = torch.zeros(kv_shape, dtype=self.dtype, device=self.device)
            self.v_cache = torch.zeros(kv_shape, dtype=self.dtype, device=self.device)
        except torch.OutOfMemoryError:
            raise EngineError(
                f"not enough GPU memory for a KV cache of {slots} x {tokens} tokens: "
                "lower [engine] max_batch_size or kv_cache_tokens"
            ) from None
        cos, sin = rotary_tables(weights.config, tokens + 1, self.device)
        self.rotary = (cos, sin)
        self.ops: LayerOps = ops or choose_ops(shape, cos, sin, num_slots=slots, device=self.device)

        # Per-slot decode state; index `slots` is the padding rows' dummy slot.
        self.input_ids = torch.zeros(slots + 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(slots + 1, dtype=torch.long, device=self.device)
        self.temperature = torch.ones(slots + 1, dtype=torch.float32, device=self.device)
        self.top_p = torch.ones(slots + 1, dtype=torch.float32, device=self.device)
        self.batch_buckets = (*(b for b in _BATCH_BUCKETS if b < slots), slots)
        self.length_buckets = _length_buckets(tokens) if self.ops.uses_length_buckets else (tokens,)
        # The decode batch: row i decodes slot row_slots[i]; padding rows name the dummy slot.
        self.row_slots = torch.full((slots,), slots, dtype=torch.long, device=self.device)
        self._rows: tuple[int, ...] = ()
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._use_graphs = use_cuda_graphs and self.device.type == "cuda"
        self._is_cuda = self.device.type == "cuda"
        self._outputs = [
            torch.zeros(2 * slots, dtype=torch.long, pin_memory=self._is_cuda)
            for _ in range(_NUM_OUTPUT_BUFFERS)
        ]
        self._next_output = itertools.cycle(range(_NUM_OUTPUT_BUFFERS))

    @property
    def uses_graphs(self) -> bool:
        return self._use_graphs

    # ---- the worker's operations -------------------------------------------------------

    def set_sampling(self, slot: int, temperature: float, top_p: float) -> None:
        """Set the sampling parameters a slot decodes with (before its prefill completes)."""
        with torch.inference_mode():
            self.temperature[slot] = temperature
            self.top_p[slot] = top_p

    def launch(
        self,
        chunks: Sequence[PrefillChunk],
        completing: Sequence[bool],
        decode_slots: Sequence[int],
        max_position: int,
    ) -> StepTokens:
        """Queue prefill of `chunks`, then one decode step of `decode_slots`, on the device.

        A chunk that `completes` its prompt samples the slot's first token and makes the slot
        ready to decode (in this same launch if it is among `decode_slots`). `max_position` is
        the largest position a decode row writes. Returns without waiting for the device.
        """
        with torch.inference_mode():
            first = self._prefill_and_activate(chunks, completing) if chunks else None
            tokens = self._decode(decode_slots, max_position) if decode_slots else None
            return self._copy_out(first, tokens)

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        """Prefill chunks in one forward pass; the logits of each chunk's last token (float32).

        The chunks are packed into one sequence: the projections and MLPs, where the weights
        are read (and, when quantized, dequantized), run once for all of them; only attention
        runs per chunk.
        """
        with torch.inference_mode():
            return self._prefill(chunks)

    def warm_up(self) -> float:
        """Compile and capture now, not on a user's first message; returns seconds.

        Runs a prefill of every padded size (kernels are compiled or tuned per size) and
        captures every decode graph.
        """
        started = time.perf_counter()
        with torch.inference_mode():
            for size in PREFILL_BUCKETS:
                size = min(size, self.cache_shape.slot_tokens)
                log.info("warm-up: prefill of %d tokens", size)
                self._prefill([PrefillChunk(0, (0,) * size)])
        if self._use_graphs:
            try:
                # Largest first, so smaller graphs reuse the memory pool the big ones allocated.
                for batch in reversed(self.batch_buckets):
                    log.info("warm-up: capturing the decode step of %d rows", batch)
                    for length in reversed(self.length_buckets):
                        self._capture(batch, length)
                torch.cuda.synchronize(self.device)
            except Exception:
                log.warning("CUDA graph capture failed; decoding without graphs", exc_info=True)
                self._use_graphs = False
                self._graphs.clear()
        return time.perf_counter() - started

    # ---- prefill -------------------------------------------------------------------------

    def _prefill_and_activate(
        self, chunks: Sequence[PrefillChunk], completing: Sequence[bool]
    ) -> torch.Tensor | None:
        logits = self._prefill(chunks)
        rows = [i for i, done in enumerate(completing) if done]
        if not rows:
            return None
        slots = self._to_device([chunks[i].slot for i in rows])
        ends = self._to_device([chunks[i].end for i in rows])
        row_index = self._to_device(rows)
        tokens = sample(
            logits[row_index], self.temperature[slots], self.top_p[slots], self.generator
        )
        self.input_ids[slots] = tokens
        self.positions[slots] = ends
        return tokens

    def _prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        shape, weights, ops = self.shape, self.weights, self.ops
        num_tokens = sum(len(c.token_ids) for c in chunks)
        num_padding = _prefill_bucket(num_tokens) - num_tokens
        # Padding rows: token 0 at position 0 of the dummy slot (nothing is written for them).
        ids = self._to_device([t for c in chunks for t in c.token_ids] + [0] * num_padding)
        positions = self._to_device(
            [p for c in chunks for p in range(c.start, c.end)] + [0] * num_padding
        )
        slots = self._to_device(
            [c.slot for c in chunks for _ in c.token_ids]
            + [self.cache_shape.num_slots] * num_padding
        )
        hidden = F.embedding(ids, weights.embed)
        residual = None
        for index, layer in enumerate(weights.layers):
            x, residual = ops.add_rms_norm(hidden, residual, layer.input_norm)
            q = ops.rotary_and_cache(
                layer.qkv(x), slots, positions, self.k_cache[index], self.v_cache[index]
            )
            outputs = []
            offset = 0
            for chunk in chunks:
                num = len(chunk.token_ids)
                keys = self.k_cache[index, chunk.slot, :, : chunk.end][None]
                values = self.v_cache[index, chunk.slot, :, : chunk.end][None]
                out = prefill_attention(
                    q[offset : offset + num].transpose(0, 1)[None], keys, values
                )
                outputs.append(out[0].transpose(0, 1).reshape(num, shape.q_size))
                offset += num
            if num_padding:
                outputs.append(q.new_zeros(num_padding, shape.q_size))
            attended = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
            x, residual = ops.add_rms_norm(layer.o(attended), residual, layer.post_norm)
            hidden = layer.down(ops.silu_mul(layer.gate_up(x)))
        ends = self._to_device(list(itertools.accumulate(len(c.token_ids) for c in chunks)))
        last, _ = ops.add_rms_norm(hidden[ends - 1], residual[ends - 1], weights.norm)
        return weights.lm_head(last).float()

    # ---- decode --------------------------------------------------------------------------

    def _decode(self, slots: Sequence[int], max_position: int) -> torch.Tensor:
        num_rows = len(slots)
        batch = next(b for b in self.batch_buckets if b >= num_rows)
        length = next(n for n in self.length_buckets if n > max_position)
        self._set_rows(slots)
        if self._use_graphs:
            try:
                graph, output = self._graphs.get((batch, length)) or self._capture(batch, length)
            except Exception:  # e.g. a quantization kernel that cannot be captured
                log.warning("CUDA graph capture failed; decoding without graphs", exc_info=True)
                self._use_graphs = False
                self._graphs.clear()
            else:
                graph.replay()
                return output[:num_rows]
        return self._decode_step(batch, length)[:num_rows]

    def _set_rows(self, slots: Sequence[int]) -> None:
        rows = tuple(slots)
        if rows == self._rows:
            return
        padded = [*rows, *[self.cache_shape.num_slots] * (len(self.row_slots) - len(rows))]
        self.row_slots.copy_(self._to_device(padded))
        self._rows = rows

    def _to_device(self, values: Sequence[int]) -> torch.Tensor:
        """Host ints as a device tensor, copied in stream order without waiting for the device.

        A copy from ordinary (pageable) memory would block the host until the device reached
        it, so the worker could not queue the next step while the current one runs.
        """
        host = torch.tensor(values, dtype=torch.long, pin_memory=self._is_cuda)
        return host.to(self.device, non_blocking=True)

    def _decode_step(self, batch: int, length: int) -> torch.Tensor:
        """Decode rows 0..batch-1 (their slots' keys up to `length` with the torch ops)."""
        weights, ops = self.weights, self.ops
        slots = self.row_slots[:batch]
        positions = self.positions[slots]
        hidden = F.embedding(self.input_ids[slots], weights.embed)
        residual = None
        for index, layer in enumerate(weights.layers):
            k_cache, v_cache = self.k_cache[index], self.v_cache[index]
            x, residual = ops.add_rms_norm(hidden, residual, layer.input_norm)
            q = ops.rotary_and_cache(layer.qkv(x), slots, positions, k_cache, v_cache)
            attended = ops.decode_attention(q, slots, positions, k_cache, v_cache, length)
            x, residual = ops.add_rms_norm(layer.o(attended), residual, layer.post_norm)
            hidden = layer.down(ops.silu_mul(layer.gate_up(x)))
        x, _ = ops.add_rms_norm(hidden, residual, weights.norm)
        logits = weights.lm_head(x).float()
        tokens = sample(logits, self.temperature[slots], self.top_p[slots], self.generator)
        # Feed the sampled tokens straight back as the next inputs, on the device.
        self.input_ids[slots] = tokens
        self.positions[slots] = positions + 1
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

    # ---- outputs -------------------------------------------------------------------------

    def _copy_out(self, first: torch.Tensor | None, tokens: torch.Tensor | None) -> StepTokens:
        host = self._outputs[next(self._next_output)]
        num_prefill = 0 if first is None else first.shape[0]
        num_decode = 0 if tokens is None else tokens.shape[0]
        if first is not None:
            host[:num_prefill].copy_(first, non_blocking=True)
        if tokens is not None:
            host[num_prefill : num_prefill + num_decode].copy_(tokens, non_blocking=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        return StepTokens(host, event, num_prefill, num_decode)


def prefill_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Causal attention of a prefill chunk's queries over its slot's keys, cached prefix included.

    q is (1, heads, chunk, head_dim); keys and values (1, kv_heads, start + chunk, head_dim).
    A chunk that continues a cached prefix (start > 0) is causal aligned to the bottom right:
    query i sees keys up to start + i. Saying so with `causal_lower_right` instead of an explicit
    boolean mask keeps it on flash attention (an explicit mask rules flash out, and cuDNN's
    backend, which takes masks, built a plan for a second per new shape on an H200). Where no
    fused kernel takes it (CPU), torch materializes the same mask.
    """
    num, total = q.shape[-2], keys.shape[-2]
    with sdpa_kernel(_PREFILL_BACKENDS):
        if num == total:
            return F.scaled_dot_product_attention(
                q, keys, values, is_causal=num > 1, enable_gqa=True
            )
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=causal_lower_right(num, total), enable_gqa=True
        )


def _prefill_bucket(num_tokens: int) -> int:
    """The padded size of a packed prefill of `num_tokens` (past the largest: a multiple of it)."""
    for size in PREFILL_BUCKETS:
        if num_tokens <= size:
            return size
    largest = PREFILL_BUCKETS[-1]
    return -(-num_tokens // largest) * largest


def _length_buckets(slot_tokens: int) -> tuple[int, ...]:
    buckets = []
    size = _MIN_LENGTH_BUCKET
    while size < slot_tokens:
        buckets.append(size)
        size *= 2
    buckets.append(slot_tokens)
    return tuple(buckets)
