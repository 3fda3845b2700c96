"""Model loading: quantization settings, clear one-line errors, KV-cache sizing, a real CPU load."""

from __future__ import annotations

import os

import pytest
import torch

from bot.config import EngineSettings, ModelSettings
from bot.engine import loading
from bot.engine.base import EngineError, FinishReason, GenerationRequest, SamplingParams
from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from tests.engine.streams import chat_prompt, collect
from tests.support.models import EOS_ID


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


# -- device and quantization checks


@pytest.mark.parametrize("quantization", ["nf4", "fp4", "int8"])
def test_quantization_without_cuda_is_refused_in_one_sentence(
    no_cuda, random_model_folder, quantization
):
    settings = ModelSettings(path=str(random_model_folder), quantization=quantization)
    message = assert_one_sentence(error_of(loading.load_model, settings))
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


def test_quantization_defaults_to_nf4_with_double_quant_and_bf16_compute():
    settings = ModelSettings()
    assert settings.quantization == "nf4" and settings.dtype == "bfloat16"
    config = loading.quantization_config(settings, loading._DTYPES[settings.dtype])
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    # The notebook's bare load_in_4bit=True: fp4 weights with float32 compute (the slow path).
    assert config.bnb_4bit_quant_type != "fp4"
    assert config.bnb_4bit_compute_dtype != torch.float32


def test_the_other_quantizations():
    fp4 = loading.quantization_config(ModelSettings(quantization="fp4"), torch.float16)
    assert fp4.load_in_4bit and fp4.bnb_4bit_quant_type == "fp4"
    assert fp4.bnb_4bit_use_double_quant and fp4.bnb_4bit_compute_dtype == torch.float16
    int8 = loading.quantization_config(ModelSettings(quantization="int8"), torch.bfloat16)
    assert int8.load_in_8bit and not int8.load_in_4bit
    assert loading.quantization_config(ModelSettings(quantization="none"), torch.float32) is None


def test_a_gpu_without_bf16_computes_in_float16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    cuda = torch.device("cuda", 0)
    assert loading.resolve_dtype(ModelSettings(), cuda) == torch.float16
    assert loading.resolve_dtype(ModelSettings(dtype="float32"), cuda) == torch.float32
    assert loading.resolve_dtype(ModelSettings(), torch.device("cpu")) == torch.bfloat16


# -- where the model comes from


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_model])
def test_a_missing_local_folder_says_so(tmp_path, load):
    settings = ModelSettings(path=str(tmp_path / "no-model-here"), quantization="none")
    message = assert_one_sentence(error_of(load, settings))
    assert message == f"[model] path {str(tmp_path / 'no-model-here')!r}: no such folder"


def test_a_missing_relative_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = ModelSettings(path="./models/r1", quantization="none")
    message = assert_one_sentence(error_of(loading.load_tokenizer, settings))
    assert message == "[model] path './models/r1': no such folder"


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_model])
def test_a_folder_without_a_model_says_so(tmp_path, load):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    settings = ModelSettings(path=str(tmp_path), quantization="none", device="cpu")
    message = assert_one_sentence(error_of(load, settings))
    assert message.startswith(f"[model] path {str(tmp_path)!r} is not a model folder")


@pytest.mark.parametrize("load", [loading.load_tokenizer, loading.load_model])
def test_a_hub_id_without_network_is_one_sentence(load):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never download (tests/conftest.py)
    settings = ModelSettings(path="nobody-here/no-such-model-for-tests", quantization="none")
    message = assert_one_sentence(error_of(load, settings))
    assert message.startswith(
        "model 'nobody-here/no-such-model-for-tests' could not be loaded: it is not a local "
        "folder and it could not be fetched from the Hugging Face hub ("
    )


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
def test_size_cache_from_config(random_model, kv_cache_tokens, max_batch_size, expected):
    model_settings = ModelSettings(quantization="none", max_context_tokens=2048)
    engine_settings = EngineSettings(kv_cache_tokens=kv_cache_tokens, max_batch_size=max_batch_size)
    assert loading.size_cache(random_model, model_settings, engine_settings) == expected


def test_eos_ids_come_from_the_generation_config_and_the_tokenizer(random_model, tokenizer):
    assert EOS_ID in loading.eos_token_ids(random_model, tokenizer)


# -- a real load


async def test_a_saved_folder_loads_on_the_cpu_and_serves(
    random_model_folder, random_model, tokenizer
):
    settings = ModelSettings(
        path=str(random_model_folder),
        quantization="none",
        dtype="float32",
        device="cpu",
        max_context_tokens=256,
        local_files_only=True,
    )
    loaded_tokenizer = loading.load_tokenizer(settings)
    model = loading.load_model(settings)
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    weight = random_model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, weight)
    shape = loading.size_cache(model, settings, EngineSettings(max_batch_size=2))
    assert shape == CacheShape(num_slots=2, slot_tokens=256)

    prompt = chat_prompt(loaded_tokenizer, "你好")
    assert prompt == chat_prompt(tokenizer, "你好")
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=8, temperature=0.0))

    async def serve(model, tokenizer, eos_ids):
        engine = LocalEngine(
            ModelRunner(model, shape), tokenizer, eos_token_ids=eos_ids, warm_up=False
        )
        async with engine:
            return await collect(engine.submit(request))

    result = await serve(model, loaded_tokenizer, loading.eos_token_ids(model, loaded_tokenizer))
    reference = await serve(random_model, tokenizer, {EOS_ID})
    assert result.reason == FinishReason.LENGTH
    assert result.text and result.text == reference.text


def test_the_configured_dtype_is_what_loads(random_model_folder):
    settings = ModelSettings(
        path=str(random_model_folder), quantization="none", dtype="bfloat16", device="cpu"
    )
    assert loading.load_model(settings).dtype == torch.bfloat16
