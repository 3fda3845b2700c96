"""Model loading: quantization settings, clear one-line errors, KV-cache sizing, a real CPU load."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from bot.config import EngineSettings, ModelSettings
from bot.engine import loading
from bot.engine.base import EngineError, FinishReason, GenerationRequest, SamplingParams
from bot.engine.cache import CacheShape, size_cache
from bot.engine.local import LocalEngine
from bot.engine.model import DecoderWeights
from bot.engine.quant.fp8 import dequantize_fp8, quantize_fp8
from bot.engine.quant.int4 import dequantize_int4, quantize_int4
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PrefillChunk
from tests.engine.streams import chat_prompt, collect
from tests.support.models import EOS_ID, build_random_model, save_model_folder

CUDA = torch.device("cuda", 0)


def error_of(call, *args) -> EngineError:
    with pytest.raises(EngineError) as caught:
        call(*args)
    return caught.value


def assert_one_sentence(error: EngineError) -> str:
    """A message for a person: one line, no traceback attached, no chained exception shown."""
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return message


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def random_weights(random_model):
    return DecoderWeights.from_hf_model(random_model)


# -- device and quantization checks


@pytest.mark.parametrize("quantization", ["nf4", "fp4", "int8", "int4", "fp8"])
def test_quantization_without_cuda_is_refused_in_one_sentence(
    no_cuda, random_model_folder, quantization
):
    settings = ModelSettings(path=str(random_model_folder), quantization=quantization)
    message = assert_one_sentence(error_of(loading.load_weights, settings))
    assert message.startswith(f"{quantization} quantization needs an NVIDIA GPU with CUDA")
    assert 'quantization = "none"' in message  # says what to do instead


def test_asking_for_cuda_without_a_gpu_is_refused(no_cuda):
    settings = ModelSettings(quantization="none", device="cuda")
    message = assert_one_sentence(error_of(loading.resolve_device, settings))
    assert message == '[model] device = "cuda" but no CUDA GPU is available'


def test_plain_weights_go_to_the_cpu_without_a_gpu(no_cuda):
    for device in ("auto", "cpu"):
        settings = ModelSettings(quantization="none", device=device)
        assert loading.resolve_device(settings) == torch.device("cpu")


def test_auto_is_the_default_and_means_unquantized_on_the_cpu(no_cuda, caplog):
    settings = ModelSettings()
    assert settings.quantization == "auto" and settings.dtype == "bfloat16"
    cpu = loading.resolve_device(settings)
    with caplog.at_level(logging.INFO, logger="bot.engine.loading"):
        assert loading.resolve_quantization(settings, cpu, torch.bfloat16) == "none"
    assert "no GPU" in caplog.text


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device as the loader sees it (name, capability); nothing runs on it."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla P100-PCIE-16GB")
    capability = {"value": (6, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability["value"])
    return capability


def test_auto_takes_int4_where_humming_runs_and_says_so(fake_gpu, monkeypatch, caplog):
    fake_gpu["value"] = (9, 0)
    monkeypatch.setattr("bot.engine.quant.humming.humming_problem", lambda: None, raising=True)
    with caplog.at_level(logging.INFO, logger="bot.engine.loading"):
        chosen = loading.resolve_quantization(ModelSettings(), CUDA, torch.bfloat16)
    assert chosen == "int4"
    assert "quantization auto: int4" in caplog.text


def test_auto_falls_back_to_nf4_with_the_reason_in_one_line(fake_gpu, caplog):
    with caplog.at_level(logging.INFO, logger="bot.engine.loading"):
        chosen = loading.resolve_quantization(ModelSettings(), CUDA, torch.float16)
    assert chosen == "nf4"
    (record,) = [r for r in caplog.records if "quantization auto" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "quantization auto: nf4 (bitsandbytes), because Tesla P100-PCIE-16GB (compute "
        "capability 6.0) is older than int4 needs (7.5); use nf4"
    )


def test_auto_says_what_to_install_when_humming_cannot_compile(fake_gpu, monkeypatch, caplog):
    fake_gpu["value"] = (8, 0)
    problem = "humming cannot compile its kernels: Try: pip install humming-kernels[cu13]"
    monkeypatch.setattr("bot.engine.quant.humming.humming_problem", lambda: problem)
    with caplog.at_level(logging.INFO, logger="bot.engine.loading"):
        assert loading.resolve_quantization(ModelSettings(), CUDA, torch.bfloat16) == "nf4"
    assert "pip install humming-kernels[cu13]" in caplog.text


@pytest.mark.parametrize(
    ("quantization", "capability", "needs"),
    [("fp8", (8, 6), "8.9"), ("int4", (7, 0), "7.5")],
)
def test_an_explicit_fast_format_on_a_gpu_too_old_is_refused(
    fake_gpu, quantization, capability, needs
):
    fake_gpu["value"] = capability
    settings = ModelSettings(quantization=quantization)
    error = error_of(loading.resolve_quantization, settings, CUDA, torch.bfloat16)
    message = assert_one_sentence(error)
    assert message.startswith(f"[model] quantization = {quantization!r}: Tesla P100")
    assert f"older than {quantization} needs ({needs})" in message


def test_a_gpu_without_bf16_computes_in_float16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert loading.resolve_dtype(ModelSettings(), CUDA) == torch.float16
    assert loading.resolve_dtype(ModelSettings(dtype="float32"), CUDA) == torch.float32
    assert loading.resolve_dtype(ModelSettings(), torch.device("cpu")) == torch.bfloat16


# -- where the model comes from


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_weights])
def test_a_missing_local_folder_says_so(tmp_path, load):
    settings = ModelSettings(path=str(tmp_path / "no-model-here"), quantization="none")
    message = assert_one_sentence(error_of(load, settings))
    assert message == f"[model] path {str(tmp_path / 'no-model-here')!r}: no such folder"


def test_a_missing_relative_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = ModelSettings(path="./models/r1", quantization="none")
    message = assert_one_sentence(error_of(loading.load_tokenizer, settings))
    assert message == "[model] path './models/r1': no such folder"


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_weights])
def test_a_folder_without_a_model_says_so(tmp_path, load):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    settings = ModelSettings(path=str(tmp_path), quantization="none", device="cpu")
    message = assert_one_sentence(error_of(load, settings))
    assert message == f"[model] path {str(tmp_path)!r} is not a model folder (no config.json)"


def test_a_model_folder_without_weights_says_so(tmp_path, random_model):
    random_model.config.save_pretrained(tmp_path)
    settings = ModelSettings(path=str(tmp_path), quantization="none", device="cpu")
    message = assert_one_sentence(error_of(loading.load_weights, settings))
    assert message == (
        f"{tmp_path} has no safetensors weights (model.safetensors or model.safetensors.index.json)"
    )


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_weights])
def test_a_hub_id_without_network_is_one_sentence(load):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never download (tests/conftest.py)
    settings = ModelSettings(path="nobody-here/no-such-model-for-tests", quantization="none")
    message = assert_one_sentence(error_of(load, settings))
    assert message.startswith(
        "model 'nobody-here/no-such-model-for-tests' could not be loaded: it is not a local "
        "folder and it could not be fetched from the Hugging Face hub ("
    )


def test_a_hub_id_with_local_files_only_names_that_setting():
    settings = ModelSettings(
        path="nobody-here/no-such-model-for-tests", quantization="none", local_files_only=True
    )
    message = assert_one_sentence(error_of(loading.load_tokenizer, settings))
    assert "[model] local_files_only = true forbids a download" in message


# -- KV-cache sizing


@pytest.mark.parametrize(
    ("kv_cache_tokens", "max_batch_size", "expected"),
    [
        (4096, 4, CacheShape(num_slots=4, slot_tokens=1024)),  # the budget split evenly
        (10_000, 0, CacheShape(num_slots=4, slot_tokens=2048)),  # as many full contexts as fit
        (10_000, 2, CacheShape(num_slots=2, slot_tokens=2048)),  # never longer than a context
        (1000, 0, CacheShape(num_slots=1, slot_tokens=960)),  # a multiple of 64
        (0, 0, CacheShape(num_slots=4, slot_tokens=2048)),  # CPU default: 4 full contexts
        (0, 3, CacheShape(num_slots=3, slot_tokens=2048)),
    ],
)
def test_size_cache_from_config(kv_cache_tokens, max_batch_size, expected):
    engine_settings = EngineSettings(kv_cache_tokens=kv_cache_tokens, max_batch_size=max_batch_size)
    shape = size_cache(
        bytes_per_token=1024,
        max_context_tokens=2048,
        engine=engine_settings,
        free_gpu_bytes=None,
    )
    assert shape == expected


def test_size_cache_from_free_gpu_memory():
    # 3 GiB headroom kept, then 85 % of the rest: 10 GiB free at 160 KiB a token.
    shape = size_cache(
        bytes_per_token=160 * 1024,
        max_context_tokens=16384,
        engine=EngineSettings(),
        free_gpu_bytes=13 * 1024**3,
    )
    budget = int(10 * 1024**3 * 0.85 // (160 * 1024))
    assert shape.num_slots == budget // 16384
    assert shape.slot_tokens == 16384


def test_eos_ids_come_from_the_generation_config_and_the_tokenizer(random_model_folder, tokenizer):
    settings = ModelSettings(path=str(random_model_folder))
    assert EOS_ID in loading.eos_token_ids(settings, tokenizer)


# -- a real load


def cpu_settings(folder, **overrides) -> ModelSettings:
    values = dict(
        path=str(folder),
        quantization="none",
        dtype="float32",
        device="cpu",
        max_context_tokens=256,
        local_files_only=True,
    )
    values.update(overrides)
    return ModelSettings(**values)


async def serve(weights, tokenizer, request, eos_ids=(EOS_ID,)):
    shape = CacheShape(num_slots=2, slot_tokens=256)
    engine = LocalEngine(
        ModelRunner(weights, shape), tokenizer, eos_token_ids=eos_ids, warm_up=False
    )
    async with engine:
        return await collect(engine.submit(request))


async def test_a_saved_folder_loads_on_the_cpu_and_serves(
    random_model_folder, random_model, tokenizer
):
    settings = cpu_settings(random_model_folder)
    loaded_tokenizer = loading.load_tokenizer(settings)
    weights = loading.load_weights(settings)
    assert weights.dtype == torch.float32 and weights.device.type == "cpu"
    assert weights.quantization == "none"
    attn = random_model.model.layers[0].self_attn
    fused = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    assert torch.equal(weights.layers[0].qkv.weight, fused)  # QKV fused into one matmul
    shape = size_cache(
        bytes_per_token=weights.shape.kv_bytes_per_token(weights.dtype),
        max_context_tokens=settings.max_context_tokens,
        engine=EngineSettings(max_batch_size=2),
        free_gpu_bytes=None,
    )
    assert shape == CacheShape(num_slots=2, slot_tokens=256)

    prompt = chat_prompt(loaded_tokenizer, "你好")
    assert prompt == chat_prompt(tokenizer, "你好")
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=8, temperature=0.0))
    eos_ids = loading.eos_token_ids(settings, loaded_tokenizer)
    result = await serve(weights, loaded_tokenizer, request, eos_ids)
    reference = await serve(random_model, tokenizer, request)
    assert result.reason == FinishReason.LENGTH
    assert result.text and result.text == reference.text


def test_the_configured_dtype_is_what_loads(random_model_folder):
    settings = cpu_settings(random_model_folder, dtype="bfloat16")
    weights = loading.load_weights(settings)
    assert weights.dtype == torch.bfloat16
    assert weights.layers[0].gate_up.weight.dtype == torch.bfloat16


@pytest.fixture(scope="module")
def wide_model():
    """A tiny model whose layer inputs (128, 256) divide into int4's groups of 128."""
    return build_random_model(seed=3, hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="module")
def wide_folder(wide_model, tokenizer, tmp_path_factory):
    return save_model_folder(wide_model, tokenizer, tmp_path_factory.mktemp("wide-model"))


def quantized_copy(model, quantization: str):
    """`model` with every projection replaced by what `quantization` makes of it."""
    quantize = {
        "int4": lambda w: dequantize_int4(*quantize_int4(w)),
        "fp8": lambda w: dequantize_fp8(*quantize_fp8(w)),
    }[quantization]
    copy = build_random_model(seed=3, hidden_size=128, intermediate_size=256)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in copy.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            # Quantized as the loader does: the fused weight (groups never straddle parts).
            for parts in (
                (attn.q_proj, attn.k_proj, attn.v_proj),
                (attn.o_proj,),
                (mlp.gate_proj, mlp.up_proj),
                (mlp.down_proj,),
            ):
                fused = quantize(torch.cat([p.weight for p in parts]))
                for part, piece in zip(
                    parts, fused.split([p.weight.shape[0] for p in parts]), strict=True
                ):
                    part.weight.copy_(piece)
    return copy


@pytest.mark.parametrize("quantization", ["int4", "fp8"])
async def test_quantized_weights_give_transformers_tokens_on_the_same_dequantized_weights(
    wide_model, wide_folder, tokenizer, quantization
):
    # The reference kernels compute what humming computes on the GPU: the dequantized weight.
    settings = cpu_settings(wide_folder, quantization=quantization, device="auto")
    weights = loading.load_weights(settings, kernels="reference")
    assert weights.quantization == quantization
    reference_model = quantized_copy(wide_model, quantization)
    prompt = chat_prompt(tokenizer, "What is the capital of France?")
    ids = torch.tensor([prompt])
    with torch.no_grad():
        expected = reference_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            min_new_tokens=10,
            do_sample=False,
            temperature=None,
            top_p=None,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=10, temperature=0.0))
    result = await serve(weights, tokenizer, request, eos_ids=())
    assert result.reason == FinishReason.LENGTH
    assert result.text == tokenizer.decode(expected)
    # The logits themselves: those of transformers on the dequantized weights, not the plain.
    runner = ModelRunner(weights, CacheShape(num_slots=1, slot_tokens=256))
    logits = runner.prefill([PrefillChunk(0, tuple(prompt))])[0]
    with torch.no_grad():
        quantized_logits = reference_model(ids).logits[0, -1]
        plain_logits = wide_model(ids).logits[0, -1]
    assert torch.allclose(logits, quantized_logits, atol=1e-4)
    assert (plain_logits - quantized_logits).abs().max() > 1e-3  # quantization shows
