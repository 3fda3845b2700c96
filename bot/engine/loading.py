"""Model and tokenizer loading: which quantization, device and dtype; weights a layer at a time.

Weights are read straight from the checkpoint's safetensors, one layer at a time: each layer's
16-bit weights go to the device, QKV and gate/up are fused, the result is quantized and the
16-bit copy dropped. So a GPU never holds more than one layer in 16 bits beside the quantized
model, and every quantization starts from the checkpoint's own weights. A checkpoint already
quantized to 4 bits (GPTQ, AWQ: bot/engine/quant/prequantized.py) loads as it is instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from bot.config import ModelSettings
from bot.engine.base import EngineError
from bot.engine.model import DecoderWeights, LayerWeights, ModelShape
from bot.engine.quant import HUMMING, Kernels, linear_factory
from bot.engine.quant.plain import PlainLinear
from bot.engine.quant.prequantized import (
    PrequantizedFormat,
    check_quantization,
    detect_format,
    prequantized_factory,
    read_fused,
)

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_INT4_MIN_CAPABILITY = (7, 5)  # humming's tensor-core kernels: Turing and newer
_FP8_MIN_CAPABILITY = (8, 9)  # FP8 formats: Ada, Hopper, Blackwell


def resolve_device(settings: ModelSettings, *, kernels: Kernels = "device") -> torch.device:
    """The device to load on; a clear error when the config asks for what this machine lacks.

    With `kernels="reference"` (tests, the GPU check's reference) int4 and fp8 run anywhere.
    """
    has_cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not has_cuda:
        raise EngineError('[model] device = "cuda" but no CUDA GPU is available')
    device = (
        torch.device("cuda", 0) if settings.device != "cpu" and has_cuda else torch.device("cpu")
    )
    runs_anywhere = kernels == "reference" and settings.quantization in HUMMING
    if (
        settings.quantization not in ("none", "auto")
        and device.type != "cuda"
        and not runs_anywhere
    ):
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


def resolve_quantization(
    settings: ModelSettings,
    device: torch.device,
    dtype: torch.dtype,
    *,
    kernels: Kernels = "device",
) -> str:
    """The weight format to load: the configured one if this machine runs it, or for "auto"
    the fastest it runs (int4 through humming, else bitsandbytes nf4); the choice is logged."""
    wanted = settings.quantization
    if kernels == "reference" and wanted in HUMMING:
        return wanted
    if device.type != "cuda":
        if wanted == "auto":
            log.info("quantization auto: no GPU, so the weights stay unquantized on the CPU")
        return "none"
    problem = _humming_problem(wanted if wanted in HUMMING else "int4", device, dtype)
    if wanted in HUMMING:
        if problem is not None:
            raise EngineError(f"[model] quantization = {wanted!r}: {problem}")
        return wanted
    if wanted != "auto":
        return wanted
    if problem is None:
        log.info("quantization auto: int4 (humming W4A16, group 128) on %s", _gpu_name(device))
        return "int4"
    log.warning("quantization auto: nf4 (bitsandbytes), because %s", problem)
    return "nf4"


def _humming_problem(quantization: str, device: torch.device, dtype: torch.dtype) -> str | None:
    capability = torch.cuda.get_device_capability(device)
    needed = _FP8_MIN_CAPABILITY if quantization == "fp8" else _INT4_MIN_CAPABILITY
    if capability < needed:
        return (
            f"{_gpu_name(device)} (compute capability {capability[0]}.{capability[1]}) is "
            f"older than {quantization} needs ({needed[0]}.{needed[1]}); use nf4"
        )
    if dtype is torch.float32:
        return 'its kernels compute in 16 bits; set [model] dtype = "bfloat16"'
    from bot.engine.quant.humming import humming_problem

    return humming_problem()


def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


def model_folder(settings: ModelSettings) -> Path:
    """The local folder of the model: the configured path, or the hub's cached download."""
    path = settings.path
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise EngineError(f"[model] path {path!r}: no such folder")
        if not (folder / "config.json").exists():
            raise EngineError(f"[model] path {path!r} is not a model folder (no config.json)")
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                path,
                allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"],
                local_files_only=settings.local_files_only,
            )
        )
    except Exception as exc:  # hub errors come in many classes; each is one line here
        raise EngineError(_hub_message(settings, exc)) from None


def model_config(settings: ModelSettings) -> Any:
    """The model's config, fetching only config.json (not the weights) from the hub."""
    from transformers import AutoConfig

    path = settings.path
    if path.startswith((".", "/", "~")) or Path(path).exists():
        folder = model_folder(settings)
    else:
        from huggingface_hub import hf_hub_download

        try:
            folder = Path(
                hf_hub_download(path, "config.json", local_files_only=settings.local_files_only)
            ).parent
        except Exception as exc:  # hub errors come in many classes; each is one line here
            raise EngineError(_hub_message(settings, exc)) from None
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"[model] path {settings.path!r} is not a model folder this bot can load "
            f"({_first_line(exc)})"
        ) from None


def check_gpu_fit(settings: ModelSettings, *, free_bytes: int | None = None) -> str:
    """Fail before any download when the model and one full dialogue cannot fit the GPU.

    Returns the estimate (for the log); EngineError naming what would fit otherwise.
    """
    from bot.engine.fit import check_fit

    device = resolve_device(settings)
    if device.type != "cuda":
        return "no GPU: the fit check is skipped"
    dtype = resolve_dtype(settings, device)
    config = model_config(settings)
    shape = ModelShape.from_config(config)
    quantization = resolve_quantization(settings, device, dtype)
    prequantized = detect_format(config)
    if prequantized is not None:
        check_quantization(prequantized, settings.quantization, quantization)
    if free_bytes is None:
        free_bytes, _total = torch.cuda.mem_get_info(device)
    fit = check_fit(
        shape,
        quantization,
        free_bytes=free_bytes,
        max_context_tokens=settings.max_context_tokens,
        kv_bytes_per_token=shape.kv_bytes_per_token(dtype),
    )
    if not fit.fits:
        raise EngineError(fit.message)
    return fit.message


def load_tokenizer(settings: ModelSettings) -> Any:
    """The model's tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    folder = model_folder(settings)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"[model] path {settings.path!r} is not a model folder this bot can load "
            f"({_first_line(exc)})"
        ) from None


def load_weights(settings: ModelSettings, *, kernels: Kernels = "device") -> DecoderWeights:
    """The model's weights on their device, fused and quantized as configured."""
    device = resolve_device(settings, kernels=kernels)
    dtype = resolve_dtype(settings, device)
    folder = model_folder(settings)
    config = model_config(settings)
    shape = ModelShape.from_config(config)
    quantization = resolve_quantization(settings, device, dtype, kernels=kernels)
    prequantized = detect_format(config)
    if prequantized is not None:
        check_quantization(prequantized, settings.quantization, quantization)
    log.info(
        "loading %s: %d layers, %s weights%s, %s compute, on %s",
        settings.path,
        shape.num_layers,
        quantization,
        "" if prequantized is None else f" (from its {prequantized.describe()} checkpoint)",
        str(dtype).removeprefix("torch."),
        device,
    )
    started = time.perf_counter()
    try:
        with _Checkpoint(folder, device) as checkpoint:
            fused = _fused_reader(checkpoint, prequantized, quantization, kernels, dtype, device)
            weights = _read_weights(checkpoint, config, shape, dtype, device, fused)
    except torch.OutOfMemoryError:
        raise EngineError(
            f"not enough GPU memory to load {settings.path} with quantization {quantization!r}; "
            "a smaller format (int4, nf4) fits where 16-bit weights do not"
        ) from None
    weights.quantization = quantization
    size = weights_bytes(weights) / 1024**3
    log.info("loaded %s in %.1f s: %.2f GiB of weights", settings.path, _since(started), size)
    return weights


def weights_bytes(weights: DecoderWeights) -> int:
    """Bytes the model's weights take on their device."""
    tensors = [weights.embed, weights.norm]
    total = sum(t.numel() * t.element_size() for t in tensors)
    for layer in weights.layers:
        total += sum(t.numel() * t.element_size() for t in (layer.input_norm, layer.post_norm))
        total += sum(linear.num_bytes for linear in (layer.qkv, layer.o, layer.gate_up, layer.down))
    if weights.lm_head is not None and not _is_tied(weights):
        total += weights.lm_head.num_bytes
    return total


def _is_tied(weights: DecoderWeights) -> bool:
    head = weights.lm_head
    return isinstance(head, PlainLinear) and head.weight.data_ptr() == weights.embed.data_ptr()


FusedReader = Callable[[str, tuple[str, ...], bool], Any]


def _fused_reader(
    checkpoint: _Checkpoint,
    prequantized: PrequantizedFormat | None,
    quantization: str,
    kernels: Kernels,
    dtype: torch.dtype,
    device: torch.device,
) -> FusedReader:
    """How one fused projection (QKV, gate/up, or a single one) is read and made a Linear."""
    if prequantized is not None:
        make_quantized = prequantized_factory(quantization, kernels)

        def read(prefix: str, parts: tuple[str, ...], with_bias: bool) -> Any:
            found = read_fused(
                checkpoint,
                prequantized,
                prefix,
                parts,
                with_bias=with_bias,
                dtype=dtype,
                device=device,
            )
            return make_quantized(*found)

        return read
    make_linear = linear_factory(quantization, kernels)

    def fused(prefix: str, parts: tuple[str, ...], with_bias: bool) -> Any:
        names = [f"{prefix}.{part}" for part in parts]
        weight = torch.cat([checkpoint.get(f"{n}.weight").to(device, dtype) for n in names])
        bias = None
        if with_bias:
            bias = torch.cat([checkpoint.get(f"{n}.bias").to(device, dtype) for n in names])
        return make_linear(weight, bias)

    return fused


def _read_weights(
    checkpoint: _Checkpoint,
    config: Any,
    shape: ModelShape,
    dtype: torch.dtype,
    device: torch.device,
    fused: FusedReader,
) -> DecoderWeights:
    def get(name: str) -> torch.Tensor:
        return checkpoint.get(name).to(device=device, dtype=dtype)

    layers = []
    for index in range(shape.num_layers):
        prefix = f"model.layers.{index}"
        layers.append(
            LayerWeights(
                input_norm=get(f"{prefix}.input_layernorm.weight"),
                qkv=fused(
                    f"{prefix}.self_attn", ("q_proj", "k_proj", "v_proj"), shape.has_qkv_bias
                ),
                o=fused(f"{prefix}.self_attn", ("o_proj",), False),
                post_norm=get(f"{prefix}.post_attention_layernorm.weight"),
                gate_up=fused(f"{prefix}.mlp", ("gate_proj", "up_proj"), False),
                down=fused(f"{prefix}.mlp", ("down_proj",), False),
            )
        )
        if (index + 1) % 8 == 0 or index + 1 == shape.num_layers:
            log.debug("loaded layer %d of %d", index + 1, shape.num_layers)
    embed = get("model.embed_tokens.weight")
    # Embeddings and the LM head stay 16-bit: they are a gather and one matmul a step.
    tied = getattr(config, "tie_word_embeddings", False) or not checkpoint.has("lm_head.weight")
    lm_head = PlainLinear(embed if tied else get("lm_head.weight"))
    return DecoderWeights(
        shape=shape,
        config=config,
        embed=embed,
        layers=layers,
        norm=get("model.norm.weight"),
        lm_head=lm_head,
        dtype=dtype,
        device=device,
    )


class _Checkpoint:
    """The tensors of a safetensors checkpoint (one file or sharded), read lazily by name."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        self._folder = folder
        self._device = device
        self._stack = ExitStack()
        self._files: dict[str, Any] = {}
        self._where: dict[str, str] = {}

    def __enter__(self) -> _Checkpoint:
        index = self._folder / "model.safetensors.index.json"
        if index.exists():
            self._where = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        else:
            single = self._folder / "model.safetensors"
            if not single.exists():
                raise EngineError(
                    f"{self._folder} has no safetensors weights (model.safetensors or "
                    "model.safetensors.index.json)"
                )
            self._where = {name: single.name for name in self._open(single.name).keys()}  # noqa: SIM118
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise EngineError(f"the checkpoint in {self._folder} has no tensor {name!r}")
        return self._open(self._where[name]).get_tensor(name)

    def _open(self, filename: str) -> Any:
        if filename not in self._files:
            from safetensors import safe_open

            # Straight to the GPU where there is one: no host copy of each tensor.
            device = str(self._device) if self._device.type == "cuda" else "cpu"
            self._files[filename] = self._stack.enter_context(
                safe_open(self._folder / filename, framework="pt", device=device)
            )
        return self._files[filename]


def eos_token_ids(settings: ModelSettings, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the generation config's and the tokenizer's EOS."""
    ids: set[int] = set()
    config_path = model_folder(settings) / "generation_config.json"
    if config_path.exists():
        configured = json.loads(config_path.read_text(encoding="utf-8")).get("eos_token_id")
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _hub_message(settings: ModelSettings, exc: Exception) -> str:
    cause = (
        "it is not in the local hub cache and [model] local_files_only = true forbids a download"
        if settings.local_files_only
        else "it is not a local folder and it could not be fetched from the Hugging Face hub"
    )
    return f"model {settings.path!r} could not be loaded: {cause} ({_first_line(exc)})"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _since(started: float) -> float:
    return time.perf_counter() - started
