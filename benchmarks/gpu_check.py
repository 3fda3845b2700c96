"""Correctness of the engine on a GPU (not a benchmark; CI has no GPU). Prints one line a check.

1. The fused Triton kernels against the torch steps they replace, in bf16 at the 14B's head
   layout (40 query heads over 8 KV heads, head size 128), rows spread over slots and chunks.
2. Each quantized projection of the 14B's exact shapes (QKV with bias, O, gate/up, down) against
   the plain matmul on the dequantized weight (what the kernel should compute) and against the
   original bf16 weight (what quantization costs), eagerly and inside a CUDA graph.
3. A small random Qwen2 (real vocabulary) through our loader and runner in every precision:
   greedy tokens against transformers' generate() on the same (dequantized) weights, rows at
   different positions in one batch, CUDA-graph replay against the eager path, and a second
   turn prefilled after its cached first turn (prefix reuse) against the same turn cold.
4. Pre-quantized checkpoints (`--only prequantized`): GPTQ (classic v1 zeros, and symmetric),
   AWQ and compressed-tensors tensors of one layer at the 14B's shapes, from known random
   4-bit weights, read by our loader's unpacking into humming, against the bf16 matmul on the
   dequantized weight (exactly representable, so only bf16 rounding separates them).
Exits 1 when a hard check fails: float32 tokens not exactly transformers' (or, for a reused
turn, not exactly the cold turn's), graph != eager, a kernel or projection off its reference by
more than rounding.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import ModelSettings
from bot.engine.cache import CacheShape
from bot.engine.loading import load_weights
from bot.engine.model import ModelShape, rotary_tables
from bot.engine.ops import TorchOps
from bot.engine.quant import linear_factory
from bot.engine.quant.fp8 import dequantize_fp8, quantize_fp8
from bot.engine.quant.int4 import dequantize_int4, quantize_int4
from bot.engine.quant.prequantized import detect_format, read_fused
from bot.engine.runner import ModelRunner, prefill_attention
from bot.engine.scheduler import PrefillChunk

FAILURES: list[str] = []


def report(name: str, ok: bool, detail: str, *, hard: bool = True) -> None:
    print(f"{'ok  ' if ok else ('FAIL' if hard else 'warn')} {name}: {detail}", flush=True)
    if hard and not ok:
        FAILURES.append(name)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


# ---- 1. kernels ----------------------------------------------------------------------------


def check_kernels(fixture: Path) -> None:
    from transformers import Qwen2Config

    from bot.engine.kernels.ops import TritonOps

    config = Qwen2Config(**json.loads((fixture / "config.json").read_text()))
    shape = ModelShape.from_config(config)
    slots, tokens = 4, 3000
    device = torch.device("cuda")
    cos, sin = rotary_tables(config, tokens + 1, device)
    reference, fused = TorchOps(shape, cos, sin, num_slots=slots), TritonOps(shape, cos, sin)
    gen = torch.Generator(device).manual_seed(0)

    def rand(*size):
        return torch.randn(*size, generator=gen, device=device, dtype=torch.bfloat16)

    x, residual, weight = (
        rand(32, shape.hidden_size),
        rand(32, shape.hidden_size),
        rand(shape.hidden_size),
    )
    want, want_sum = reference.add_rms_norm(x, residual, weight)
    got, got_sum = fused.add_rms_norm(x, residual, weight)
    error = relative_error(got, want)
    report(
        "kernel add_rms_norm bf16",
        error < 1e-2 and torch.equal(got_sum, want_sum),
        f"rel err {error:.2e}",
    )
    gate_up = rand(32, 2 * shape.intermediate_size)
    error = relative_error(fused.silu_mul(gate_up), reference.silu_mul(gate_up))
    report("kernel silu_mul bf16", error < 1e-2, f"rel err {error:.2e}")
    row_slots = torch.tensor([0, 3, 1, 2, 0, slots], device=device)
    positions = torch.tensor([0, 255, 256, 1000, tokens - 1, 5], device=device)
    qkv = rand(6, shape.q_size + 2 * shape.kv_size)
    kv = (slots, shape.num_kv_heads, tokens + 1, shape.head_dim)
    caches = [(rand(*kv), rand(*kv))]
    caches.append((caches[0][0].clone(), caches[0][1].clone()))
    want_q = reference.rotary_and_cache(qkv, row_slots, positions, *caches[0])
    got_q = fused.rotary_and_cache(qkv, row_slots, positions, *caches[1])
    error = relative_error(got_q, want_q)
    same_cache = all(
        relative_error(a[:, :, :tokens], b[:, :, :tokens]) < 1e-2
        for a, b in zip(*caches, strict=True)
    )
    report("kernel rotary_and_cache bf16", error < 1e-2 and same_cache, f"q rel err {error:.2e}")
    want = reference.decode_attention(want_q, row_slots, positions, *caches[0], tokens)
    got = fused.decode_attention(got_q, row_slots, positions, *caches[1], tokens)
    error = relative_error(got[:5], want[:5])
    report(
        "kernel decode_attention bf16",
        error < 2e-2 and torch.isfinite(got).all().item(),
        f"rel err {error:.2e}",
    )
    # A prefill chunk that continues a cached prefix (turn 8 of a dialogue: ~500 new tokens
    # over ~3,800 cached) against the explicit-mask attention it replaces.
    cached, new = 3321, 505
    q = rand(1, shape.num_heads, new, shape.head_dim)
    keys, values = (rand(1, shape.num_kv_heads, cached + new, shape.head_dim) for _ in range(2))
    allowed = (
        torch.arange(cached + new, device=device)[None, :]
        <= torch.arange(cached, cached + new, device=device)[:, None]
    )
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), keys.float(), values.float(), attn_mask=allowed, enable_gqa=True
    )
    error = relative_error(prefill_attention(q, keys, values), want)
    report(
        "kernel prefill_attention after a cached prefix bf16", error < 2e-2, f"rel err {error:.2e}"
    )


# ---- 2. quantized projections --------------------------------------------------------------

PROJECTIONS = {
    "qkv": (7168, 5120, True),
    "o": (5120, 5120, False),
    "gate_up": (27648, 5120, False),
    "down": (5120, 13824, False),
}
DEQUANTIZE = {
    "int4": lambda w: dequantize_int4(*quantize_int4(w)),
    "fp8": lambda w: dequantize_fp8(*quantize_fp8(w)),
}
EXPECTED_COST = {"int4": 0.13, "fp8": 0.05}  # relative error against bf16 that is normal


def check_projections(formats: tuple[str, ...], names: tuple[str, ...]) -> None:
    gen = torch.Generator("cuda").manual_seed(1)
    for quantization in formats:
        make = linear_factory(quantization)
        for name, (rows, columns, has_bias) in PROJECTIONS.items():
            if name not in names:
                continue
            weight = (torch.randn(rows, columns, generator=gen, device="cuda") * 0.02).bfloat16()
            bias = (
                (torch.randn(rows, generator=gen, device="cuda") * 0.02).bfloat16()
                if has_bias
                else None
            )
            try:
                linear = make(weight, bias)
            except Exception as exc:
                report(f"{quantization} {name}", False, f"could not build: {exc!r}")
                continue
            dequantized = DEQUANTIZE[quantization](weight)
            for batch in (1, 32, 300):
                x = torch.randn(batch, columns, generator=gen, device="cuda").bfloat16()
                got = linear(x)
                want = torch.nn.functional.linear(x, dequantized, bias)
                error = relative_error(got, want)
                cost = relative_error(got, torch.nn.functional.linear(x, weight, bias))
                report(
                    f"{quantization} {name} [{batch}x{columns}]->{rows}",
                    error < 1e-2 and cost < EXPECTED_COST[quantization],
                    f"vs dequantized {error:.2e}, vs bf16 {cost:.3f}",
                )
            x = torch.randn(8, columns, generator=gen, device="cuda").bfloat16()
            eager = linear(x)
            # Some shapes use split-K with atomic adds: the summation order, so the last bits,
            # vary from run to run (eager against eager shows it), in a graph or not.
            again = relative_error(linear(x), eager)
            graph = torch.cuda.CUDAGraph()
            static = x.clone()
            with torch.cuda.graph(graph):
                out = linear(static)
            graph.replay()
            torch.cuda.synchronize()
            error = relative_error(out, eager)
            report(
                f"{quantization} {name} in a CUDA graph",
                error < 1e-2,
                f"replay vs eager {error:.1e} (eager vs eager {again:.1e})",
            )


# ---- 3. the whole model --------------------------------------------------------------------


def small_model(fixture: Path, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    values = json.loads((fixture / "config.json").read_text())
    values.update(
        hidden_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1024,
    )
    torch.manual_seed(1)
    with torch.device("cuda"):
        return Qwen2ForCausalLM(Qwen2Config(**values)).to(dtype).eval()


def dequantized_copy(model, quantization: str):
    quantize = DEQUANTIZE[quantization]
    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
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
    return model


def generate(model, prompts, new_tokens):
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device="cuda")
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            eos_token_id=None,
            pad_token_id=0,
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs


def run_turn(runner, prompts: list[list[PrefillChunk]], new_tokens: int) -> list[list[int]]:
    """Prefill each prompt (its chunks in order), then decode all of them together, greedily."""
    generated = {}
    for chunks in prompts:
        slot = chunks[-1].slot
        runner.set_sampling(slot, 0.0, 1.0)
        for i, chunk in enumerate(chunks):
            firsts, _ = runner.launch([chunk], [i == len(chunks) - 1], [], 0).wait()
        generated[slot] = list(firsts)
    slots = [chunks[-1].slot for chunks in prompts]
    for _ in range(new_tokens - 1):
        top = max(c[-1].end + len(generated[c[-1].slot]) - 1 for c in prompts)
        _, tokens = runner.launch([], [], slots, top).wait()
        for slot, token in zip(slots, tokens, strict=True):
            generated[slot].append(token)
    return [generated[s] for s in slots]


def ours(weights, prompts, new_tokens, graphs: bool) -> list[list[int]]:
    runner = ModelRunner(weights, CacheShape(num_slots=8, slot_tokens=1024), use_cuda_graphs=graphs)
    runner.warm_up()
    slots = [7, 2, 4, 0]  # rows in any slots
    whole = [[PrefillChunk(s, tuple(p))] for s, p in zip(slots, prompts, strict=True)]
    return run_turn(runner, whole, new_tokens)


def reused_and_cold(
    weights, prompts, new_tokens, graphs: bool = True
) -> tuple[list[list[int]], list[list[int]]]:
    """A second turn prefilled after its cached first turn, and the same turn prefilled whole.

    The second prompt resends the first and half its answer (R1's template drops the answer's
    reasoning), then a new message; the reused rows prefill only that rest, in two chunks (a
    chunked continuation), while the cold rows prefill it all in other slots. All rows decode
    together in CUDA graphs, so the only difference is the reuse.
    """
    runner = ModelRunner(weights, CacheShape(num_slots=8, slot_tokens=1024), use_cuda_graphs=graphs)
    runner.warm_up()
    turn_slots, cold_slots = [7, 2, 4, 0], [1, 3, 5, 6]
    first = [[PrefillChunk(s, tuple(p))] for s, p in zip(turn_slots, prompts, strict=True)]
    answers = run_turn(runner, first, new_tokens)
    message = torch.randint(1000, 150000, (50,), generator=torch.Generator().manual_seed(2))
    message = message.tolist()
    seconds = [p + a[: len(a) // 2] + message for p, a in zip(prompts, answers, strict=True)]
    reused, cold = [], []
    for slot, cold_slot, prompt, answer, second in zip(
        turn_slots, cold_slots, prompts, answers, seconds, strict=True
    ):
        start = len(prompt) + len(answer) // 2
        middle = start + (len(second) - start) // 2
        reused.append(
            [
                PrefillChunk(slot, tuple(second[start:middle]), start),
                PrefillChunk(slot, tuple(second[middle:]), middle),
            ]
        )
        cold.append([PrefillChunk(cold_slot, tuple(second))])
    both = run_turn(runner, reused + cold, new_tokens)
    return both[: len(prompts)], both[len(prompts) :]


def agreement(a, b) -> float:
    """Share of tokens before the first difference in each row (after one, paths diverge)."""
    same = 0
    for x, y in zip(a, b, strict=True):
        for p, q in zip(x, y, strict=True):
            if p != q:
                break
            same += 1
    return same / sum(len(x) for x in a)


def check_models(fixture: Path) -> None:
    torch.manual_seed(0)
    prompts = [torch.randint(1000, 150000, (n,)).tolist() for n in (5, 37, 200, 300)]
    new_tokens = 40
    folder = Path(tempfile.mkdtemp(prefix="small-model-"))
    try:
        small_model(fixture, torch.bfloat16).save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copy(fixture / name, folder / name)
        # float32: our loader and runner must give transformers' tokens exactly.
        settings = ModelSettings(
            path=str(folder),
            quantization="none",
            dtype="float32",
            device="cuda",
            local_files_only=True,
        )
        weights = load_weights(settings)
        # The float32 reference is the bf16 checkpoint read back in float32.
        from transformers import Qwen2ForCausalLM

        reference_model = (
            Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
        )
        reference = generate(reference_model, prompts, new_tokens)
        graph, eager = (
            ours(weights, prompts, new_tokens, True),
            ours(weights, prompts, new_tokens, False),
        )
        share = agreement(reference, graph)
        report("model float32 vs transformers", share == 1.0, f"prefix agreement {share:.3f}")
        report("model float32 graph == eager", graph == eager, "")
        reused, cold = reused_and_cold(weights, prompts, new_tokens)
        share = agreement(cold, reused)
        report("model float32 reused turn vs cold", share == 1.0, f"prefix agreement {share:.3f}")
        for quantization in ("none", "int4", "fp8", "nf4"):
            name = "bf16" if quantization == "none" else quantization
            settings = ModelSettings(
                path=str(folder),
                quantization=quantization,
                dtype="bfloat16",
                device="cuda",
                local_files_only=True,
            )
            try:
                weights = load_weights(settings)
            except Exception as exc:
                report(f"model {name} load", False, repr(exc))
                continue
            if quantization in DEQUANTIZE:
                hf = dequantized_copy(
                    Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval(),
                    quantization,
                )
            elif quantization == "nf4":
                from transformers import BitsAndBytesConfig

                quant = BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.bfloat16,
                )
                hf = Qwen2ForCausalLM.from_pretrained(
                    folder, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
                ).eval()
            else:
                hf = Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()
            reference = generate(hf, prompts, new_tokens)
            graph, eager = (
                ours(weights, prompts, new_tokens, True),
                ours(weights, prompts, new_tokens, False),
            )
            # Logits of the first prompt's prefill against transformers' on the same weights.
            runner = ModelRunner(
                weights, CacheShape(num_slots=1, slot_tokens=512), use_cuda_graphs=False
            )
            logits = runner.prefill([PrefillChunk(0, tuple(prompts[3]))])[0]
            with torch.no_grad():
                want = hf(torch.tensor([prompts[3]], device="cuda")).logits[0, -1].float()
            error = relative_error(logits, want)
            share = agreement(reference, graph)
            report(f"model {name} logits vs transformers", error < 0.05, f"rel err {error:.3e}")
            report(
                f"model {name} tokens vs transformers",
                share > 0.3,
                f"prefix agreement {share:.3f}",
                hard=False,
            )
            if quantization in DEQUANTIZE:
                # Split-K atomics: not bitwise reproducible, so paths may part after many tokens.
                share = agreement(graph, eager)
                report(f"model {name} graph vs eager", share > 0.3, f"prefix agreement {share:.3f}")
            else:
                report(f"model {name} graph == eager", graph == eager, "")
            reused, cold = reused_and_cold(weights, prompts, new_tokens)
            share = agreement(cold, reused)
            report(
                f"model {name} reused turn vs cold", share > 0.3, f"prefix agreement {share:.3f}"
            )
            del weights, hf
            torch.cuda.empty_cache()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- 4. pre-quantized checkpoints -----------------------------------------------------------

# Each projection's parts, as the checkpoint stores them: (name, rows), inputs, bias.
PREQUANTIZED_LAYER = {
    "qkv": ((("q_proj", 5120), ("k_proj", 1024), ("v_proj", 1024)), 5120, True),
    "o": ((("o_proj", 5120),), 5120, False),
    "gate_up": ((("gate_proj", 13824), ("up_proj", 13824)), 5120, False),
    "down": ((("down_proj", 5120),), 13824, False),
}


class _Tensors:
    """One layer's checkpoint tensors by name, as the loader's safetensors reader offers them."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name]


def check_prequantized() -> None:
    from bot.engine.quant.humming import prequantized_int4_linear
    from tests.engine import prequantized_packing as packing

    checkpoints = {
        "GPTQ v1 zero points": (packing.gptq_config(128), packing.gptq_tensors, False),
        "GPTQ symmetric": (packing.gptq_config(128, sym=True), packing.gptq_tensors, True),
        "AWQ": (packing.awq_config(128), packing.awq_tensors, False),
        "compressed-tensors": (packing.compressed_config(128), packing.compressed_tensors, True),
    }
    cpu_gen = torch.Generator().manual_seed(2)
    gen = torch.Generator("cuda").manual_seed(2)
    for label, (config, pack, symmetric) in checkpoints.items():
        fmt = detect_format(type("Config", (), {"quantization_config": config})())
        for name, (parts, columns, has_bias) in PREQUANTIZED_LAYER.items():
            source, known_parts = _Tensors(), []
            for part, rows in parts:
                known = packing.random_int4(rows, columns, 128, cpu_gen, symmetric=symmetric)
                known = packing.KnownInt4(
                    *(t.cuda() for t in (known.codes, known.zeros, known.scales))
                )
                known_parts.append(known)
                source.tensors.update({f"layer.{part}.{k}": v for k, v in pack(known).items()})
                if has_bias:
                    source.tensors[f"layer.{part}.bias"] = (
                        torch.randn(rows, generator=gen, device="cuda") * 0.02
                    ).bfloat16()
            part_names = tuple(part for part, _ in parts)
            try:
                weights, bias = read_fused(
                    source,
                    fmt,
                    "layer",
                    part_names,
                    with_bias=has_bias,
                    dtype=torch.bfloat16,
                    device=torch.device("cuda"),
                )
                linear = prequantized_int4_linear(weights, bias)
            except Exception as exc:
                report(f"prequantized {label} {name}", False, f"could not build: {exc!r}")
                continue
            dequantized = weights.dequantize()  # bf16: scales x (codes - zeros)
            codes = torch.cat([k.codes for k in known_parts])
            zeros = torch.cat([k.zeros for k in known_parts])
            unpacked = torch.equal(weights.codes.long(), codes) and (
                torch.equal(weights.zeros.long(), zeros)
                if weights.zeros is not None
                else bool((zeros == 8).all())
            )
            zero_points = "with zero points" if weights.zeros is not None else "symmetric"
            for batch in (1, 32, 300):
                x = torch.randn(batch, columns, generator=gen, device="cuda").bfloat16()
                error = relative_error(linear(x), torch.nn.functional.linear(x, dequantized, bias))
                report(
                    f"prequantized {label} {name} ({zero_points}) [{batch}x{columns}]->"
                    f"{dequantized.shape[0]}",
                    error < 1e-2 and unpacked,
                    f"vs dequantized {error:.2e}, codes and zeros as written: {unpacked}",
                )
            del linear, weights, dequantized, source
            torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", type=Path, required=True)
    parser.add_argument("--only", default="kernels,projections,models,prequantized")
    parser.add_argument("--formats", default="int4,fp8", help="quantized projections to check")
    parser.add_argument("--projections", default=",".join(PROJECTIONS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    steps = {
        "kernels": lambda: check_kernels(args.fixture),
        "projections": lambda: check_projections(
            tuple(args.formats.split(",")), tuple(args.projections.split(","))
        ),
        "models": lambda: check_models(args.fixture),
        "prequantized": check_prequantized,
    }
    for name in args.only.split(","):
        try:
            steps[name]()
        except Exception as exc:  # one broken step must not hide the others' results
            import traceback

            traceback.print_exc()
            report(f"{name} (crashed)", False, repr(exc))
    print(f"{len(FAILURES)} hard failures: {FAILURES}" if FAILURES else "all hard checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    raise SystemExit(main())
