"""Build the local GPU engine from settings: tokenizer, weights, KV cache, runner, engine."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from bot.config import Settings
from bot.engine.cache import size_cache
from bot.engine.local import LocalEngine

log = logging.getLogger(__name__)


def build_local_engine(settings: Settings) -> tuple[Any, LocalEngine]:
    """Load tokenizer and weights and size the KV cache (blocking: run it in a thread)."""
    from bot.engine.loading import (
        check_gpu_fit,
        eos_token_ids,
        load_tokenizer,
        load_weights,
        resolve_device,
    )
    from bot.engine.runner import ModelRunner

    # A machine that cannot run this config (4-bit without a GPU) is told so at once, not after
    # fetching the tokenizer, or failing to, which would hide the real problem.
    resolve_device(settings.model)
    # Before the 29.5 GB download: does it fit at all, and if not, what would?
    log.info("GPU fit: %s", check_gpu_fit(settings.model))
    # humming compiles its kernels on first use (about a minute) and caches them: beside the
    # database, so a restart of the bot finds them. An operator's own setting wins.
    os.environ.setdefault(
        "HUMMING_CACHE_DIR", str(Path(settings.storage.path).resolve().parent / "kernel-cache")
    )
    tokenizer = load_tokenizer(settings.model)
    weights = load_weights(settings.model)
    shape = size_cache(
        bytes_per_token=weights.shape.kv_bytes_per_token(weights.dtype),
        max_context_tokens=settings.model.max_context_tokens,
        engine=settings.engine,
        free_gpu_bytes=free_gpu_bytes(weights.device),
    )
    runner = ModelRunner(
        weights, shape, use_cuda_graphs=settings.engine.cuda_graphs, seed=settings.engine.seed
    )
    engine = LocalEngine(
        runner,
        tokenizer,
        eos_token_ids=eos_token_ids(settings.model, tokenizer),
        max_queue=settings.engine.max_queue,
        prefix_reuse=settings.engine.prefix_reuse,
    )
    return tokenizer, engine


def free_gpu_bytes(device: torch.device) -> int | None:
    """GPU memory free now on `device` (what the KV cache may take); None off the GPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free
