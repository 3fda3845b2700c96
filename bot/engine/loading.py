"""Model and tokenizer loading: quantization from config, device checks, KV-cache sizing."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from bot.config import EngineSettings, ModelSettings
from bot.engine.base import EngineError
from bot.engine.runner import CacheShape, default_cache_shape, kv_bytes_per_token

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Kept free beside the KV cache for activations, logits, sampling buffers and CUDA graphs.
_GPU_HEADROOM_BYTES = 3 * 1024**3
_CPU_DEFAULT_SLOTS = 4


def resolve_device(settings: ModelSettings) -> torch.device:
    """The device to load on; a clear error when the config asks for what this machine lacks."""
    has_cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not has_cuda:
        raise EngineError('[model] device = "cuda" but no CUDA GPU is available')
    device = (
        torch.device("cuda", 0) if settings.device != "cpu" and has_cuda else torch.device("cpu")
    )
    if settings.quantization != "none" and device.type != "cuda":
        raise EngineError(
            f"{settings.quantization} quantization needs an NVIDIA GPU with CUDA and none was "
            'found; set [model] quantization = "none" (and device = "cpu") to run on the CPU'
        )
    return device


def resolve_dtype(settings: ModelSettings, device: torch.device) -> torch.dtype:
    """The compute dtype; float16 where the GPU has no bfloat16 (P100, T4, V100)."""
    dtype = _DTYPES[settings.dtype]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bfloat16 support: computing in float16 instead")
        return torch.float16
    return dtype


def quantization_config(settings: ModelSettings, compute_dtype: torch.dtype) -> Any:
    """A BitsAndBytesConfig for the configured quantization, or None for plain weights."""
    if settings.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if settings.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # nf4 + double quantization + a 16-bit compute dtype: the notebook's bare load_in_4bit gave
    # fp4 with float32 compute, the slow path.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quantization,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(settings: ModelSettings) -> Any:
    """The model's tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            settings.path, local_files_only=settings.local_files_only
        )
    except (OSError, ValueError) as exc:
        raise EngineError(_missing_model_message(settings, exc)) from None


def load_model(settings: ModelSettings) -> Any:
    """The causal LM on its device, quantized as configured."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    started = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            settings.path,
            dtype=dtype,
            quantization_config=quantization_config(settings, dtype),
            device_map={"": device.index if device.type == "cuda" else "cpu"},
            local_files_only=settings.local_files_only,
        )
    except (OSError, ValueError) as exc:
        raise EngineError(_missing_model_message(settings, exc)) from None
    except torch.OutOfMemoryError:
        raise EngineError(
            f"not enough GPU memory to load {settings.path} with quantization "
            f"{settings.quantization!r}"
        ) from None
    model.eval()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        allocated = torch.cuda.memory_allocated(device) / 1024**3
        log.info(
            "loaded %s (%s) in %.1f s; GPU memory in use: %.2f GiB",
            settings.path,
            settings.quantization,
            seconds,
            allocated,
        )
    else:
        log.info("loaded %s on the CPU in %.1f s", settings.path, seconds)
    return model


def size_cache(model: Any, model_settings: ModelSettings, engine: EngineSettings) -> CacheShape:
    """Slots and slot length for the KV cache: from config, else from the free GPU memory."""
    device = model.lm_head.weight.device
    dtype = model.model.embed_tokens.weight.dtype
    per_token = kv_bytes_per_token(model.config, dtype)
    context = model_settings.max_context_tokens
    if engine.kv_cache_tokens:
        budget = engine.kv_cache_tokens
    elif device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        usable = max(0, free - _GPU_HEADROOM_BYTES) * engine.kv_cache_memory_fraction
        budget = int(usable // per_token)
    else:
        budget = (engine.max_batch_size or _CPU_DEFAULT_SLOTS) * context
    shape = default_cache_shape(
        max_context_tokens=context, kv_budget_tokens=budget, max_batch_size=engine.max_batch_size
    )
    log.info(
        "KV cache: %d slots x %d tokens (%.2f GiB)",
        shape.num_slots,
        shape.slot_tokens,
        shape.num_slots * shape.slot_tokens * per_token / 1024**3,
    )
    return shape


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the generation config's and the tokenizer's EOS."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _missing_model_message(settings: ModelSettings, exc: Exception) -> str:
    path = settings.path
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not Path(path).expanduser().exists():
        return f"[model] path {path!r}: no such folder"
    if looks_local:
        return f"[model] path {path!r} is not a model folder this bot can load ({_first_line(exc)})"
    return (
        f"model {path!r} could not be loaded: it is not a local folder and it could not be "
        f"fetched from the Hugging Face hub ({_first_line(exc)})"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
