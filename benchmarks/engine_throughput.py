"""Engine throughput on a GPU: our LocalEngine in every precision vs the notebook's way, one run.

Builds a random-weight model with DeepSeek-R1-Distill-Qwen-14B's exact config.json, saves it to
a RAM disk, and loads it back through the bot's own loader (so every format is quantized from
the 16-bit checkpoint as in production). For each precision it measures, with 256-token prompts
and 256 new tokens (EOS ignored so every request runs to full length), chats arriving `--gap`
seconds apart:
  * ours: 1, 8 and 32 concurrent chats through LocalEngine (continuous batching, CUDA graphs),
    plus one chat arriving while 31 others decode, and the graph-only decode rate at 32 rows
    (the runner's captured step replayed back to back: what the host work must not eat into);
  * 4-bit formats under a 15 GiB memory cap (a 16 GB card): 4 dialogues of 4096 tokens each;
  * baseline ("the notebook's way", once, in nf4): one transformers `generate()` with a
    TextIteratorStreamer in a thread at a time, requests queued first come first served.
Writes JSON (with each precision's ratios to the notebook's way and the physical limit of a
step: its weight bytes at the measured memory bandwidth) and a PNG plot.
Run: python benchmarks/engine_throughput.py --fixture DIR --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import EngineSettings, ModelSettings
from bot.engine.base import Finished, GenerationRequest, SamplingParams
from bot.engine.cache import CacheShape, size_cache
from bot.engine.factory import free_gpu_bytes
from bot.engine.loading import load_tokenizer, load_weights, weights_bytes
from bot.engine.local import LocalEngine
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PREFILL_TOKENS_PER_ITERATION, PrefillChunk

log = logging.getLogger("bench")
PROMPT_TOKENS = 256
NEW_TOKENS = 256
TEMPERATURE, TOP_P = 0.6, 0.95
GiB = 1024**3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def random_prompts(count: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    # Plain vocabulary ids (no special tokens): 1000..150000.
    return torch.randint(1000, 150000, (count, length), generator=generator).tolist()


def checkpoint_settings(fixture: Path, checkpoint: Path, quantization: str) -> ModelSettings:
    """How the bot would load `checkpoint` (built from the fixture's config if missing)."""
    if not (checkpoint / "config.json").exists():
        build_random_checkpoint(fixture, checkpoint)
    return ModelSettings(
        path=str(checkpoint), quantization=quantization, device="cuda", local_files_only=True
    )


def build_random_checkpoint(fixture: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.perf_counter()
    config = AutoConfig.from_pretrained(fixture)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target, max_shard_size="5GB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(fixture / name, target / name)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    log.info("built and saved the random 14B checkpoint in %.1f s", time.perf_counter() - started)


# ---- ours -----------------------------------------------------------------------------


async def serve_ours(
    engine: LocalEngine, prompts: list[list[int]], gap: float, new_tokens: int = NEW_TOKENS
) -> dict:
    async def one(index: int) -> Finished:
        await asyncio.sleep(index * gap)
        stream = engine.submit(
            GenerationRequest(
                prompt_ids=tuple(prompts[index]),
                params=SamplingParams(
                    max_new_tokens=new_tokens,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    timeout_seconds=3600,
                ),
                owner=f"user{index}",
            )
        )
        finished = None
        async for event in stream:
            if isinstance(event, Finished):
                finished = event
        return finished

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    wall = time.perf_counter() - started
    return summarize(
        [(r.first_token_seconds, r.total_seconds, r.num_generated_tokens) for r in results], wall
    )


async def late_arrival_ttft(engine: LocalEngine, prompts: list[list[int]]) -> float:
    """First-token time of a chat that arrives while len(prompts)-1 others are decoding."""
    others = prompts[:-1]
    streams = [
        engine.submit(
            GenerationRequest(
                prompt_ids=tuple(p),
                params=SamplingParams(
                    max_new_tokens=4 * NEW_TOKENS,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    timeout_seconds=3600,
                ),
                owner=f"busy{i}",
            )
        )
        for i, p in enumerate(others)
    ]
    # Wait until every one of them has produced text, i.e. all are decoding.
    firsts = [asyncio.ensure_future(anext(aiter(s))) for s in streams]
    for stream, first in zip(streams, firsts, strict=True):
        event = await first
        while type(event).__name__ != "TextDelta":
            event = await anext(aiter(stream))
    late = engine.submit(
        GenerationRequest(
            prompt_ids=tuple(prompts[-1]),
            params=SamplingParams(max_new_tokens=8, temperature=TEMPERATURE, top_p=TOP_P),
            owner="late",
        )
    )
    finished = None
    async for event in late:
        if isinstance(event, Finished):
            finished = event
    for stream in streams:
        stream.cancel()
    for stream in streams:
        async for _ in stream:
            pass
    return finished.first_token_seconds


def make_engine(
    weights, tokenizer, shape: CacheShape, prefill_tokens: int = PREFILL_TOKENS_PER_ITERATION
) -> LocalEngine:
    runner = ModelRunner(weights, shape, use_cuda_graphs=True, seed=0)
    # No EOS: random weights would stop at random places; every request runs to full length.
    return LocalEngine(
        runner, tokenizer, eos_token_ids=(), max_queue=1024, prefill_tokens=prefill_tokens
    )


def graph_only_rate(weights, rows: int, steps: int = 50) -> dict:
    """Tokens/s of the captured decode step at `rows` replayed back to back (no engine)."""
    runner = ModelRunner(weights, CacheShape(num_slots=rows, slot_tokens=2048), seed=0)
    runner.warm_up()
    slots = list(range(rows))
    prompts = random_prompts(rows, PROMPT_TOKENS, 5)
    for slot in slots:
        runner.set_sampling(slot, TEMPERATURE, TOP_P)
    chunks = [PrefillChunk(slot, tuple(prompts[slot])) for slot in slots]
    for start in range(0, rows, 8):
        runner.launch(chunks[start : start + 8], [True] * len(chunks[start : start + 8]), [], 0)
    position = PROMPT_TOKENS + NEW_TOKENS // 2  # mid-answer, like the engine's average row
    runner.positions[:rows] = position
    runner.launch([], [], slots, position).wait()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        runner.launch([], [], slots, position)
    torch.cuda.synchronize()
    step = (time.perf_counter() - started) / steps
    del runner
    gc.collect()
    torch.cuda.empty_cache()
    return {"rows": rows, "step_ms": step * 1000, "tokens_per_s": rows / step}


async def bench_ours(model, tokenizer, gap: float, prefill_tokens: int) -> dict:
    results: dict = {}
    shape = CacheShape(num_slots=32, slot_tokens=2048)
    engine = make_engine(model, tokenizer, shape, prefill_tokens)
    log.info("ours: warming up (kernel compilation, graph capture)")
    started = time.perf_counter()
    async with engine:
        results["warm_up_s"] = time.perf_counter() - started
        await serve_ours(engine, random_prompts(2, PROMPT_TOKENS, 99), gap)  # first-use effects
        for chats in (1, 8, 32):
            results[str(chats)] = await serve_ours(
                engine, random_prompts(chats, PROMPT_TOKENS, chats), gap
            )
            log.info("ours %2d chats: %s", chats, brief(results[str(chats)]))
        # All 32 at once: after the first prefills, every step decodes all 32 (the steady state
        # the graph-only rate is measured in; the staggered run above is mostly ramp).
        results["32_at_once"] = await serve_ours(engine, random_prompts(32, PROMPT_TOKENS, 33), 0.0)
        log.info("ours 32 chats at once: %s", brief(results["32_at_once"]))
        results["first_token_s_arriving_while_31_decode"] = await late_arrival_ttft(
            engine, random_prompts(32, PROMPT_TOKENS, 7)
        )
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return results


async def bench_memory_cap(model, tokenizer, cap_gib: float, dialogues: int, tokens: int) -> dict:
    """Serve `dialogues` concurrent `tokens`-token dialogues with the process capped at cap_gib."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap_gib * GiB / total)
    try:
        engine = make_engine(model, tokenizer, CacheShape(num_slots=dialogues, slot_tokens=tokens))
        async with engine:
            prompts = random_prompts(dialogues, tokens - NEW_TOKENS, 11)
            result = await serve_ours(engine, prompts, gap=0.05)
        result["peak_gib_process"] = torch.cuda.max_memory_reserved() / GiB
        result["cap_gib"] = cap_gib
        result["dialogue_tokens"] = tokens
        del engine
    finally:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)
    return result


# ---- the notebook's way ---------------------------------------------------------------


def serve_baseline(model, tokenizer, prompts: list[list[int]], gap: float, budget_s: float) -> dict:
    """One generate() at a time with a TextIteratorStreamer, FCFS; stops after budget_s."""
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        first_token_at: float | None = None

        def put(self, value):
            if not self.next_tokens_are_prompt and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            super().put(value)

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    served = []  # (first token after arrival, end after arrival, tokens)
    service_times = []
    first_token_latencies = []  # service start -> first token
    end = started
    for index, prompt in enumerate(prompts):
        arrival = started + index * gap
        now = time.perf_counter()
        if now - started > budget_s:
            break
        if now < arrival:
            time.sleep(arrival - now)
        streamer = TimedStreamer(tokenizer, skip_prompt=True)
        inputs = torch.tensor([prompt], device=model.device)
        begin = time.perf_counter()
        worker = threading.Thread(
            target=model.generate,
            kwargs=dict(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                streamer=streamer,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                pad_token_id=tokenizer.eos_token_id,
            ),
        )
        worker.start()
        for _ in streamer:
            pass
        worker.join()
        end = time.perf_counter()
        service_times.append(end - begin)
        first_token_latencies.append(streamer.first_token_at - begin)
        served.append((streamer.first_token_at - arrival, end - arrival, NEW_TOKENS))
    wall = end - started
    result = summarize(served, wall)
    # Requests not reached within the budget: each would wait for every earlier one's full
    # service time, so their first-token times follow from the measured service times.
    mean_service = statistics.mean(service_times)
    mean_first = statistics.mean(first_token_latencies)
    first_tokens = [r[0] for r in served]
    finish = end - started
    for index in range(len(served), len(prompts)):
        arrival = index * gap
        start = max(finish, arrival)
        first_tokens.append(start - arrival + mean_first)
        finish = start + mean_service
    result["requests_measured"] = len(served)
    result["requests_total"] = len(prompts)
    result["first_token_p50_s_projected"] = percentile(first_tokens, 50)
    result["first_token_p95_s_projected"] = percentile(first_tokens, 95)
    result["mean_service_s"] = mean_service
    return result


def warm_up_baseline(model, tokenizer) -> None:
    """One short generate() first, as ours captures its graphs first: the first call pays
    one-time set-up (kernel selection, allocations) that no later request sees."""
    inputs = torch.tensor(random_prompts(1, PROMPT_TOKENS, 0), device=model.device)
    model.generate(
        input_ids=inputs,
        attention_mask=torch.ones_like(inputs),
        max_new_tokens=16,
        min_new_tokens=16,
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.cuda.synchronize()


def bench_baseline(checkpoint: Path, tokenizer, gap: float, budget_s: float) -> dict:
    """The notebook's way on transformers' own nf4 model (double quantization, bf16 compute)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
    ).eval()
    try:
        return _bench_baseline(model, tokenizer, gap, budget_s)
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()


def _bench_baseline(model, tokenizer, gap: float, budget_s: float) -> dict:
    warm_up_baseline(model, tokenizer)
    results = {"1": serve_baseline(model, tokenizer, random_prompts(1, PROMPT_TOKENS, 1), gap, 1e9)}
    log.info("baseline  1 chat: %s", brief(results["1"]))
    queued = serve_baseline(model, tokenizer, random_prompts(32, PROMPT_TOKENS, 32), gap, budget_s)
    results["32"] = queued
    log.info("baseline 32 chats (%d measured): %s", queued["requests_measured"], brief(queued))
    return results


# ---- reporting --------------------------------------------------------------------------


def summarize(requests: list[tuple[float, float, int]], wall: float) -> dict:
    first = [r[0] for r in requests]
    per_request = [(n - 1) / (total - ft) for ft, total, n in requests if n > 1 and total > ft]
    generated = sum(r[2] for r in requests)
    return {
        "chats": len(requests),
        "total_tokens_per_s": generated / wall if wall > 0 else 0.0,
        "decode_tokens_per_s_per_chat_median": statistics.median(per_request) if per_request else 0,
        "first_token_p50_s": percentile(first, 50),
        "first_token_p95_s": percentile(first, 95),
        "first_token_max_s": max(first) if first else float("nan"),
        "wall_s": wall,
        "generated_tokens": generated,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / GiB,
    }


def brief(result: dict) -> str:
    return (
        f"{result['total_tokens_per_s']:.1f} tok/s total, "
        f"{result['decode_tokens_per_s_per_chat_median']:.1f} tok/s/chat, "
        f"first token p50 {result['first_token_p50_s']:.3f} s "
        f"p95 {result['first_token_p95_s']:.3f} s, "
        f"peak {result['peak_gpu_gib']:.1f} GiB"
    )


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    chats = [1, 8, 32]
    colors = {"int4": "tab:green", "fp8": "tab:purple", "nf4": "tab:blue", "bf16": "tab:orange"}
    for precision, data in report["precisions"].items():
        if "ours" not in data:
            continue
        ours = [data["ours"][str(c)]["total_tokens_per_s"] for c in chats]
        ax.plot(chats, ours, "o-", color=colors.get(precision), label=f"ours, {precision}")
    notebook = report.get("notebook")
    if notebook:
        base = [notebook["1"]["total_tokens_per_s"], *[notebook["32"]["total_tokens_per_s"]] * 2]
        ax.plot(chats, base, "s--", color="grey", label="notebook's way (nf4, queued)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(chats, [str(c) for c in chats])
    ax.set_xlabel("concurrent chats")
    ax.set_ylabel("generated tokens/s (all chats)")
    ax.set_title(
        "R1-Distill-Qwen-14B shape, one H200\n256-token prompts, 256 new tokens", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--fixture", type=Path, required=True, help="folder with config + tokenizer"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/dev/shm/r1-14b-random"))
    parser.add_argument("--precisions", default="int4,fp8,nf4,bf16")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between chat arrivals")
    parser.add_argument(
        "--baseline-budget",
        type=float,
        default=40.0,
        help="seconds the queued baseline may run before the rest is projected",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--prefill-tokens",
        type=int,
        default=PREFILL_TOKENS_PER_ITERATION,
        help="prompt tokens prefilled per engine iteration",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "arrival_gap_s": args.gap,
        "prefill_tokens_per_iteration": args.prefill_tokens,
        "sampling": {"temperature": TEMPERATURE, "top_p": TOP_P},
        "precisions": {},
    }
    import bitsandbytes
    import transformers

    report["transformers"] = transformers.__version__
    report["bitsandbytes"] = bitsandbytes.__version__
    report["memory_bandwidth_tb_s"] = copy_bandwidth() / 1e12
    tokenizer = load_tokenizer(checkpoint_settings(args.fixture, args.checkpoint, "none"))
    if not args.skip_baseline:
        report["notebook"] = bench_baseline(
            args.checkpoint, tokenizer, args.gap, args.baseline_budget
        )
        (args.out / "engine_throughput.json").write_text(json.dumps(report, indent=2))
    for precision in args.precisions.split(","):
        try:
            report["precisions"][precision] = await bench_precision(
                args, precision, tokenizer, report
            )
        except Exception as exc:  # one failing format must not cost the others' figures
            log.exception("%s failed", precision)
            report["precisions"][precision] = {"error": repr(exc)}
        (args.out / "engine_throughput.json").write_text(json.dumps(report, indent=2))
        gc.collect()
        torch.cuda.empty_cache()
    add_ratios(report)
    (args.out / "engine_throughput.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "engine_throughput.png")
    print_table(report)


QUANTIZATION_OF = {"int4": "int4", "fp8": "fp8", "nf4": "nf4", "bf16": "none"}


async def bench_precision(args, precision: str, tokenizer, report: dict) -> dict:
    settings = checkpoint_settings(args.fixture, args.checkpoint, QUANTIZATION_OF[precision])
    started = time.perf_counter()
    weights = load_weights(settings)
    entry: dict = {
        "load_s": time.perf_counter() - started,
        "weights_gib": torch.cuda.memory_allocated() / GiB,
    }
    # The bytes one decode step must read: every layer's weights and the LM head.
    read = weights_bytes(weights) - weights.embed.numel() * weights.embed.element_size()
    entry["weights_read_per_step_gib"] = read / GiB
    bandwidth = report["memory_bandwidth_tb_s"] * 1e12
    entry["physical_limit_single_stream_tokens_per_s"] = bandwidth / read
    # What the bot would choose by default on this GPU (sizing only, nothing allocated).
    shape = size_cache(
        bytes_per_token=weights.shape.kv_bytes_per_token(weights.dtype),
        max_context_tokens=ModelSettings().max_context_tokens,
        engine=EngineSettings(),
        free_gpu_bytes=free_gpu_bytes(weights.device),
    )
    entry["default_cache_shape"] = {"slots": shape.num_slots, "slot_tokens": shape.slot_tokens}
    entry["ours"] = await bench_ours(weights, tokenizer, args.gap, args.prefill_tokens)
    entry["graph_only_32"] = graph_only_rate(weights, 32)
    graph_step = entry["graph_only_32"]["step_ms"] / 1000
    # Chats arriving `gap` apart: the last arrives 31 gaps in and then needs NEW_TOKENS steps.
    # At the 32-row graph step each, this estimates what any engine can reach (a little less
    # than the truth: while chats arrive and leave, steps have fewer rows and are quicker).
    entry["staggered_32_bound_tokens_per_s"] = (
        32 * NEW_TOKENS / (31 * args.gap + NEW_TOKENS * graph_step)
    )
    # The engine's decode rate with all 32 decoding, against the graph alone.
    at_once = entry["ours"]["32_at_once"]
    entry["engine_share_of_graph_rate_32"] = (
        32 * at_once["decode_tokens_per_s_per_chat_median"] / entry["graph_only_32"]["tokens_per_s"]
    )
    log.info(
        "%s: graph-only %.0f tok/s at 32 rows; the engine reaches %.0f%% of it",
        precision,
        entry["graph_only_32"]["tokens_per_s"],
        100 * entry["engine_share_of_graph_rate_32"],
    )
    if precision in ("int4", "nf4"):
        entry["memory_cap_16gb_card"] = await bench_memory_cap(weights, tokenizer, 15.0, 4, 4096)
        log.info(
            "%s under a 15 GiB cap, 4 x 4096-token dialogues: %s",
            precision,
            brief(entry["memory_cap_16gb_card"]),
        )
    del weights
    return entry


def copy_bandwidth() -> float:
    """Device memory bandwidth in bytes/s: a 4 GiB device-to-device copy, read + write."""
    source = torch.empty(4 * GiB, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 5
    del source, target
    torch.cuda.empty_cache()
    return 2 * 4 * GiB / seconds


def add_ratios(report: dict) -> None:
    """Each precision's figures over the notebook's way (one generate() at a time, nf4)."""
    notebook = report.get("notebook")
    if not notebook:
        return
    for entry in report["precisions"].values():
        ours = entry.get("ours")
        if not ours:
            continue
        entry["ratio_to_notebook"] = {
            "single_stream": ours["1"]["decode_tokens_per_s_per_chat_median"]
            / notebook["1"]["decode_tokens_per_s_per_chat_median"],
            "32_chats": ours["32"]["total_tokens_per_s"] / notebook["32"]["total_tokens_per_s"],
            "32_chats_at_once": ours["32_at_once"]["total_tokens_per_s"]
            / notebook["32"]["total_tokens_per_s"],
        }


def print_table(report: dict) -> None:
    print("\nprecision | chats | total tok/s | tok/s/chat | TTFT p50 | TTFT p95 | peak GiB")
    rows = [(p, d.get("ours", {})) for p, d in report["precisions"].items()]
    rows.append(("notebook", report.get("notebook", {})))
    for precision, results in rows:
        for chats, row in results.items():
            if not isinstance(row, dict) or "total_tokens_per_s" not in row:
                continue
            print(
                f"{precision} | {chats} | {row['total_tokens_per_s']:.1f} | "
                f"{row['decode_tokens_per_s_per_chat_median']:.1f} | "
                f"{row['first_token_p50_s']:.3f} | {row['first_token_p95_s']:.3f} | "
                f"{row['peak_gpu_gib']:.1f}"
            )
    for precision, data in report["precisions"].items():
        extra = {
            k: data[k] for k in ("ratio_to_notebook", "engine_share_of_graph_rate_32") if k in data
        }
        if "graph_only_32" in data:
            extra["graph_only_32_tok_s"] = round(data["graph_only_32"]["tokens_per_s"])
        if "error" in data:
            extra["error"] = data["error"]
        print(precision, json.dumps(extra))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(main())
