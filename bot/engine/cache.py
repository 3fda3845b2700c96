"""The KV cache's shape and sizing, and which slot holds which dialogue's tokens (prefix reuse).

The cache is `num_slots` slots of `slot_tokens` positions. A request takes one free slot; when
it ends, its slot keeps the KV of the dialogue (prompt + answer) and the token ids it holds. The
next request of that dialogue takes the slot back and prefills only what differs; any other
request may take it too, least recently used first. Reuse is decided by comparing token ids
(the longest common prefix), never by trusting the dialogue tag, so a changed system prompt,
a reset or trimmed history is a plain miss.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import EngineSettings
from bot.engine.base import EngineError

log = logging.getLogger(__name__)

# The length granularity of a slot: keeps decode length buckets aligned.
_SLOT_ALIGNMENT = 64
_MAX_DEFAULT_SLOTS = 64
# Kept free beside the KV cache for activations, logits, sampling buffers and CUDA graphs.
_GPU_HEADROOM_BYTES = 3 * 1024**3
_CPU_DEFAULT_SLOTS = 4


@dataclass(frozen=True, slots=True)
class CacheShape:
    """How the KV cache is laid out: `num_slots` requests of up to `slot_tokens` tokens each."""

    num_slots: int
    slot_tokens: int


def default_cache_shape(
    *, max_context_tokens: int, kv_budget_tokens: int, max_batch_size: int
) -> CacheShape:
    """Split a KV budget into slots: long enough for a full context when the budget allows."""
    if kv_budget_tokens < 1:
        raise EngineError("no memory left for the KV cache after loading the model")
    if max_batch_size > 0:
        slots = max_batch_size
    else:
        slots = max(1, min(_MAX_DEFAULT_SLOTS, kv_budget_tokens // max_context_tokens))
    slot_tokens = min(max_context_tokens, kv_budget_tokens // slots)
    if slot_tokens >= _SLOT_ALIGNMENT:
        slot_tokens = slot_tokens // _SLOT_ALIGNMENT * _SLOT_ALIGNMENT
    return CacheShape(num_slots=slots, slot_tokens=max(1, slot_tokens))


def size_cache(
    *,
    bytes_per_token: int,
    max_context_tokens: int,
    engine: EngineSettings,
    free_gpu_bytes: int | None,
) -> CacheShape:
    """Slots and slot length for the KV cache: from `[engine]`, else from the free GPU memory
    (`free_gpu_bytes`, read after the weights loaded; None on the CPU)."""
    if engine.kv_cache_tokens:
        budget = engine.kv_cache_tokens
    elif free_gpu_bytes is not None:
        usable = max(0, free_gpu_bytes - _GPU_HEADROOM_BYTES) * engine.kv_cache_memory_fraction
        budget = int(usable // bytes_per_token)
    else:
        budget = (engine.max_batch_size or _CPU_DEFAULT_SLOTS) * max_context_tokens
    shape = default_cache_shape(
        max_context_tokens=max_context_tokens,
        kv_budget_tokens=budget,
        max_batch_size=engine.max_batch_size,
    )
    log.info(
        "KV cache: %d slots x %d tokens (%.2f GiB)",
        shape.num_slots,
        shape.slot_tokens,
        shape.num_slots * shape.slot_tokens * bytes_per_token / 1024**3,
    )
    return shape


@dataclass(frozen=True, slots=True)
class ReuseStats:
    """Prefix reuse since start: requests that reused KV, and tokens reused or prefilled."""

    num_hits: int = 0
    num_misses: int = 0
    num_reused_tokens: int = 0
    num_prefilled_tokens: int = 0


@dataclass(slots=True)
class _Slot:
    index: int
    dialogue: str = ""
    tokens: tuple[int, ...] = ()  # ids whose KV the slot holds, from position 0
    last_used: int = 0
    is_busy: bool = False


class SlotTable:
    """Hands out KV slots and remembers what each free slot still holds."""

    def __init__(self, num_slots: int, *, reuse: bool = True) -> None:
        self._slots = [_Slot(index) for index in range(num_slots)]
        self._is_reuse_on = reuse
        self._clock = itertools.count(1)
        self._num_hits = self._num_misses = 0
        self._num_reused = self._num_prefilled = 0

    @property
    def num_free(self) -> int:
        return sum(not slot.is_busy for slot in self._slots)

    @property
    def stats(self) -> ReuseStats:
        return ReuseStats(self._num_hits, self._num_misses, self._num_reused, self._num_prefilled)

    def acquire(self, dialogue: str, prompt_ids: Sequence[int]) -> tuple[int, int] | None:
        """A free slot for `prompt_ids` and how many of its leading tokens the slot holds.

        At least the last prompt token is always left to prefill: its logits give the first
        answer token. None when every slot is busy.
        """
        free = [slot for slot in self._slots if not slot.is_busy]
        if not free:
            return None
        own = [s for s in free if dialogue and s.dialogue == dialogue] if self._is_reuse_on else []
        # The dialogue's own slot; else empty slots first, then the least recently used.
        slot = own[0] if own else min(free, key=lambda s: (bool(s.tokens), s.last_used))
        num_reused = 0
        if self._is_reuse_on:
            num_reused = min(_common_prefix(slot.tokens, prompt_ids), len(prompt_ids) - 1)
        slot.is_busy = True
        slot.dialogue, slot.tokens = dialogue, ()
        if num_reused:
            self._num_hits += 1
        else:
            self._num_misses += 1
        self._num_reused += num_reused
        self._num_prefilled += len(prompt_ids) - num_reused
        return slot.index, num_reused

    def release(self, index: int, tokens: Sequence[int]) -> None:
        """The request in slot `index` ended; the slot keeps the KV of `tokens` for reuse."""
        slot = self._slots[index]
        slot.is_busy = False
        slot.tokens = tuple(tokens) if self._is_reuse_on else ()
        slot.last_used = next(self._clock)


def _common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    length = min(len(cached), len(prompt))
    for index in range(length):
        if cached[index] != prompt[index]:
            return index
    return length
