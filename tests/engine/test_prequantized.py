"""Pre-quantized GPTQ / AWQ / compressed-tensors checkpoints: read as they are, exactly.

The packed tensors are written from known 4-bit weights (tests/engine/prequantized_packing.py)
the way each format's own tools write them; what the loader reads must dequantize to exactly
scales x (codes - zeros), and the loaded model must give transformers' tokens on those
dequantized weights. humming's kernel needs a GPU: here the reference kernels (the dequantized
weight in a plain matmul) stand in; benchmarks/gpu_check.py checks the kernel against them.
"""

from __future__ import annotations

import logging

import pytest
import torch

from bot.config import ModelSettings
from bot.engine import loading
from bot.engine.base import EngineError, FinishReason, GenerationRequest, SamplingParams
from bot.engine.cache import CacheShape
from bot.engine.local import LocalEngine
from bot.engine.quant.int4 import Int4Weights
from bot.engine.quant.prequantized import (
    PrequantizedFormat,
    check_quantization,
    detect_format,
    read_fused,
)
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PrefillChunk
from tests.engine.prequantized_packing import (
    KnownInt4,
    awq_config,
    awq_tensors,
    compressed_config,
    compressed_tensors,
    gptq_config,
    gptq_tensors,
    random_int4,
    write_prequantized,
)
from tests.engine.reference import chat_prompt, generate_greedy
from tests.engine.streams import collect
from tests.support.models import build_random_model

CPU = torch.device("cpu")
QKV = ("q_proj", "k_proj", "v_proj")


class Tensors:
    """A checkpoint as a dict of tensors (what the loader's safetensors reader offers)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name]


class Config:
    """A model config as transformers gives it: quantization_config a plain dict."""

    def __init__(self, quantization_config: dict | None) -> None:
        if quantization_config is not None:
            self.quantization_config = quantization_config


def formats(config: dict) -> PrequantizedFormat:
    found = detect_format(Config(config))
    assert found is not None
    return found


WRITERS = {
    "gptq": (lambda group: gptq_config(group), lambda k: gptq_tensors(k, v1=True)),
    "gptq_v2": (lambda group: gptq_config(group, v1=False), lambda k: gptq_tensors(k, v1=False)),
    "awq": (awq_config, awq_tensors),
}


def checkpoint_of(
    method: str, knowns: dict[str, KnownInt4], group: int
) -> tuple[PrequantizedFormat, Tensors]:
    make_config, pack = WRITERS[method]
    tensors = {
        f"attn.{name}.{key}": value
        for name, known in knowns.items()
        for key, value in pack(known).items()
    }
    return formats(make_config(group)), Tensors(tensors)


def read(fmt, source, parts, *, with_bias=False, dtype=torch.float32):
    return read_fused(source, fmt, "attn", parts, with_bias=with_bias, dtype=dtype, device=CPU)


# -- unpacking


@pytest.mark.parametrize("method", ["gptq", "gptq_v2", "awq"])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_unpacked_weights_are_exactly_the_known_ones(method, group):
    generator = torch.Generator().manual_seed(1)
    known = random_int4(96, 256, group, generator)
    fmt, source = checkpoint_of(method, {"o_proj": known}, group)
    weights, bias = read(fmt, source, ("o_proj",))
    assert bias is None
    assert torch.equal(weights.codes.long(), known.codes)
    assert weights.zeros is not None and torch.equal(weights.zeros.long(), known.zeros)
    assert torch.equal(weights.scales, known.scales.float())
    assert weights.group_size == group
    assert torch.equal(weights.dequantize(), known.dequantized())


def test_the_classic_gptq_format_stores_zero_minus_one():
    generator = torch.Generator().manual_seed(2)
    known = random_int4(64, 128, 64, generator)
    _, source = checkpoint_of("gptq", {"o_proj": known}, 64)  # written as v1: zero - 1
    assert formats(gptq_config(64)).zero_offset == 1  # "gptq" is the classic v1 format
    v1, _ = read(formats(gptq_config(64)), source, ("o_proj",))
    as_v2, _ = read(formats(gptq_config(64, v1=False)), source, ("o_proj",))
    assert torch.equal(v1.dequantize(), known.dequantized())
    assert as_v2.zeros is not None and torch.equal(as_v2.zeros.long(), known.zeros - 1)
    assert not torch.equal(as_v2.dequantize(), known.dequantized())


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_qkv_fuse_along_n_with_their_own_groups_zeros_and_biases(method):
    generator = torch.Generator().manual_seed(3)
    knowns = {
        "q_proj": random_int4(128, 128, 64, generator),
        "k_proj": random_int4(64, 128, 64, generator),
        "v_proj": random_int4(64, 128, 64, generator),
    }
    fmt, source = checkpoint_of(method, knowns, 64)
    biases = {
        name: torch.randn(k.codes.shape[0], generator=generator) for name, k in knowns.items()
    }
    source.tensors.update({f"attn.{name}.bias": b.half() for name, b in biases.items()})
    weights, bias = read(fmt, source, QKV, with_bias=True)
    expected = torch.cat([knowns[name].dequantized() for name in QKV])
    assert weights.codes.shape == (256, 128) and weights.scales.shape == (256, 2)
    assert torch.equal(weights.dequantize(), expected)
    assert torch.equal(bias, torch.cat([biases[name].half().float() for name in QKV]))


def test_symmetric_checkpoints_drop_their_zero_points():
    generator = torch.Generator().manual_seed(4)
    known = random_int4(64, 128, 128, generator, symmetric=True)
    fmt, source = checkpoint_of("gptq", {"o_proj": known}, 128)
    weights, _ = read(fmt, source, ("o_proj",))
    assert weights.zeros is None  # all 8: humming's kernel without zero points
    assert torch.equal(weights.dequantize(), known.dequantized())


def test_a_symmetric_part_fuses_with_an_asymmetric_one():
    generator = torch.Generator().manual_seed(5)
    zeros = random_int4(64, 128, 64, generator)
    eights = random_int4(32, 128, 64, generator, symmetric=True)
    parts = [
        Int4Weights(zeros.codes.to(torch.uint8), zeros.scales.float(), zeros.zeros.to(torch.uint8)),
        Int4Weights(eights.codes.to(torch.uint8), eights.scales.float(), None),
    ]
    fused = Int4Weights.concat(parts)
    expected = torch.cat([zeros.dequantized(), eights.dequantized()])
    assert torch.equal(fused.dequantize(), expected)


def test_compressed_tensors_codes_carry_their_offset_of_eight():
    generator = torch.Generator().manual_seed(6)
    known = random_int4(64, 256, 32, generator, symmetric=True)
    source = Tensors({f"attn.o_proj.{k}": v for k, v in compressed_tensors(known).items()})
    weights, _ = read(formats(compressed_config(32)), source, ("o_proj",))
    assert weights.zeros is None
    assert torch.equal(weights.dequantize(), known.dequantized())


def test_scales_take_the_compute_dtype():
    generator = torch.Generator().manual_seed(7)
    known = random_int4(64, 128, 128, generator)
    fmt, source = checkpoint_of("awq", {"o_proj": known}, 128)
    weights, _ = read(fmt, source, ("o_proj",), dtype=torch.bfloat16)
    assert weights.scales.dtype == torch.bfloat16
    assert weights.dequantize().dtype == torch.bfloat16


# -- what is refused, by name


def test_a_16_bit_checkpoint_is_not_prequantized():
    assert detect_format(Config(None)) is None


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (gptq_config(128, bits=8), "quantization_config.bits = 8"),
        (gptq_config(256), "quantization_config.group_size = 256"),
        (gptq_config(-1), "quantization_config.group_size = -1"),
        (gptq_config(128, desc_act=True), "quantization_config.desc_act = true"),
        (gptq_config(128, lm_head=True), "quantization_config.lm_head = true"),
        (gptq_config(128, checkpoint_format="marlin"), "quantization_config.checkpoint_format"),
        (awq_config(128, version="gemv"), "quantization_config.version = 'gemv'"),
        (awq_config(128, zero_point=False), "quantization_config.zero_point = false"),
        ({"quant_method": "bitsandbytes"}, "quantization_config.quant_method = 'bitsandbytes'"),
        (compressed_config(128, num_bits=8), "config_groups.weights.num_bits = 8"),
        (compressed_config(128, symmetric=False), "config_groups.weights.symmetric = false"),
        (compressed_config(128, actorder="group"), "config_groups.weights.actorder = 'group'"),
    ],
)
def test_unsupported_configs_name_their_key(config, named):
    with pytest.raises(EngineError) as caught:
        detect_format(Config(config))
    message = str(caught.value)
    assert message.startswith("this checkpoint's config.json has ") and "\n" not in message
    assert named in message


def test_act_order_tensors_are_refused():
    generator = torch.Generator().manual_seed(8)
    known = random_int4(64, 256, 128, generator)
    fmt, source = checkpoint_of("gptq", {"o_proj": known}, 128)
    source.tensors["attn.o_proj.g_idx"] = torch.randperm(256, generator=generator).int() // 128
    with pytest.raises(EngineError, match=r"attn\.o_proj\.g_idx reorders the input groups"):
        read(fmt, source, ("o_proj",))


def test_a_classic_gptq_zero_of_16_is_refused():
    generator = torch.Generator().manual_seed(9)
    known = random_int4(64, 128, 128, generator)
    fmt, source = checkpoint_of("gptq", {"o_proj": known}, 128)
    source.tensors["attn.o_proj.qzeros"] = torch.full_like(source.tensors["attn.o_proj.qzeros"], -1)
    with pytest.raises(EngineError, match=r"attn\.o_proj\.qzeros holds a zero point of 16"):
        read(fmt, source, ("o_proj",))


def test_an_unquantized_projection_is_refused():
    generator = torch.Generator().manual_seed(10)
    known = random_int4(64, 128, 128, generator)
    fmt, source = checkpoint_of("awq", {"q_proj": known}, 128)
    source.tensors["attn.k_proj.weight"] = torch.zeros(64, 128)
    with pytest.raises(EngineError, match=r"leaves attn\.k_proj unquantized"):
        read(fmt, source, QKV)


def test_a_group_size_the_tensors_do_not_have_is_refused():
    generator = torch.Generator().manual_seed(11)
    known = random_int4(64, 256, 64, generator)  # written with groups of 64
    _, source = checkpoint_of("awq", {"o_proj": known}, 64)
    with pytest.raises(EngineError, match="do not match quantization_config's group size 128"):
        read(formats(awq_config(128)), source, ("o_proj",))


@pytest.mark.parametrize("resolved", ["nf4", "fp8", "int8"])
def test_other_quantizations_of_a_prequantized_checkpoint_are_refused(resolved):
    fmt = formats(gptq_config(128))
    with pytest.raises(EngineError) as caught:
        check_quantization(fmt, resolved, resolved)
    message = str(caught.value)
    assert message.startswith(f"[model] quantization = {resolved!r}, but the checkpoint is")
    assert "pre-quantized (GPTQ int4, group 128)" in message and '"int4"' in message
    with pytest.raises(EngineError, match="quantization = \"auto\" chose 'nf4'"):
        check_quantization(fmt, "auto", "nf4")
    check_quantization(fmt, "int4", "int4")
    check_quantization(fmt, "auto", "none")


# -- a whole model


@pytest.fixture(scope="module")
def wide_model():
    """A tiny model whose layer inputs (128, 256) divide into groups of 32, 64 and 128."""
    return build_random_model(seed=3, hidden_size=128, intermediate_size=256)


async def serve(weights, tokenizer, prompt, num_tokens):
    engine = LocalEngine(
        ModelRunner(weights, CacheShape(num_slots=1, slot_tokens=256)),
        tokenizer,
        eos_token_ids=(),
        warm_up=False,
    )
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=num_tokens, temperature=0))
    async with engine:
        return await collect(engine.submit(request))


CHECKPOINTS = {
    "gptq-v1-g64": gptq_config(64),
    "gptq-v2-g128": gptq_config(128, v1=False),
    "awq-g128": awq_config(128),
    "awq-g32": awq_config(32),
    "compressed-tensors-g64": compressed_config(64),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
@pytest.mark.parametrize(
    ("quantization", "kernels", "loads_as"),
    [("int4", "reference", "int4"), ("auto", "device", "none")],
    ids=["int4-reference-kernels", "auto-on-the-cpu-dequantized"],
)
async def test_a_prequantized_checkpoint_gives_transformers_tokens_on_its_weights(
    wide_model, tokenizer, tmp_path, caplog, name, quantization, kernels, loads_as, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reference, _ = write_prequantized(wide_model, tokenizer, tmp_path, CHECKPOINTS[name])
    settings = ModelSettings(
        path=str(tmp_path),
        quantization=quantization,
        dtype="float32",
        local_files_only=True,
        max_context_tokens=256,
    )
    with caplog.at_level(logging.INFO, logger="bot.engine.loading"):
        weights = loading.load_weights(settings, kernels=kernels)
    assert weights.quantization == loads_as
    assert "checkpoint)" in caplog.text  # the log says the weights came pre-quantized
    prompt = chat_prompt(tokenizer, "What is the capital of France?")
    expected = generate_greedy(reference, prompt, 10)
    result = await serve(weights, tokenizer, prompt, 10)
    assert result.reason == FinishReason.LENGTH
    assert result.text == tokenizer.decode(expected)
    runner = ModelRunner(weights, CacheShape(num_slots=1, slot_tokens=256))
    logits = runner.prefill([PrefillChunk(0, tuple(prompt))])[0]
    with torch.no_grad():
        reference_logits = reference(torch.tensor([prompt])).logits[0, -1]
        plain_logits = wide_model(torch.tensor([prompt])).logits[0, -1]
    assert torch.allclose(logits, reference_logits, atol=1e-4)
    assert (plain_logits - reference_logits).abs().max() > 1e-2  # the checkpoint's own weights


async def test_explicit_nf4_on_a_prequantized_checkpoint_is_refused_before_loading(
    wide_model, tokenizer, tmp_path, monkeypatch
):
    write_prequantized(wide_model, tokenizer, tmp_path, gptq_config(128))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "H100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    settings = ModelSettings(path=str(tmp_path), quantization="nf4", local_files_only=True)
    with pytest.raises(EngineError, match=r"^\[model\] quantization = 'nf4', but the checkpoint"):
        loading.load_weights(settings)
