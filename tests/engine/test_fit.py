"""Will the 14B fit this GPU? The estimate and its advice, before anything is downloaded."""

from __future__ import annotations

import json

import pytest
import torch

from bot.config import ModelSettings
from bot.engine import loading
from bot.engine.base import EngineError
from bot.engine.fit import GiB, check_fit, weights_bytes
from bot.engine.model import ModelShape


@pytest.fixture(scope="module")
def shape(fixture_path) -> ModelShape:
    from transformers import Qwen2Config

    config = json.loads((fixture_path / "config.json").read_text(encoding="utf-8"))
    return ModelShape.from_config(Qwen2Config(**config))


def fit(shape, quantization, free_gib, context=16384):
    return check_fit(
        shape,
        quantization,
        free_bytes=int(free_gib * GiB),
        max_context_tokens=context,
        kv_bytes_per_token=shape.kv_bytes_per_token(torch.bfloat16),
    )


def test_weight_sizes_are_those_measured_on_the_gpu(shape):
    # Measured after loading on an H200: int4 9.3, fp8 15.9, bf16 28.9 GiB (within 5 %).
    measured = {"int4": 9.34, "fp8": 15.87, "none": 28.91}
    for quantization, gib in measured.items():
        assert abs(weights_bytes(shape, quantization) / GiB - gib) / gib < 0.05


def test_a_big_gpu_fits_and_says_how_many_dialogues(shape):
    result = fit(shape, "int4", 80)
    assert result.fits
    assert result.message.startswith("int4 weights 9.7 GiB; room for about 22 dialogues")


def test_a_16_gb_card_is_told_the_context_that_fits(shape):
    result = fit(shape, "int4", 15)
    assert not result.fits
    assert result.message.endswith("try max_context_tokens = 12288")


def test_bf16_on_a_24_gb_card_is_told_to_quantize(shape):
    result = fit(shape, "none", 22)
    assert not result.fits
    assert 'try [model] quantization = "int4"' in result.message


def test_a_12_gb_card_is_told_no_setting_will_do(shape):
    result = fit(shape, "int4", 11)
    assert not result.fits
    assert result.message.endswith("try a GPU with more memory")


def test_the_check_runs_before_the_download_and_stops_start_up(
    monkeypatch, random_model_folder, fixture_path, tmp_path
):
    # A GPU as the loader sees it, with the real 14B config in a folder without weights.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA L4")
    monkeypatch.setattr("bot.engine.quant.humming.humming_problem", lambda: None)
    (tmp_path / "config.json").write_text((fixture_path / "config.json").read_text())
    settings = ModelSettings(path=str(tmp_path))
    with pytest.raises(EngineError) as error:
        loading.check_gpu_fit(settings, free_bytes=int(11 * GiB))
    assert str(error.value).startswith("the model does not fit this GPU: int4 weights take 9.7")
    fine = loading.check_gpu_fit(settings, free_bytes=int(22 * GiB))
    assert fine.startswith("int4 weights 9.7 GiB; room for about 3 dialogues of 16384 tokens")
