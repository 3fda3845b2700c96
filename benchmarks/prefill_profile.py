"""Where a prefill step's time goes on a GPU: cold prompts, chunks continuing a cached prefix.

Loads the random-weight 14B checkpoint that engine_throughput.py builds (building it if needed)
and times, with the device synchronized around each:
  * a cold prefill of 32 .. 2048 tokens (one chunk);
  * packed chunks that continue a cached dialogue (what a reused turn prefills): k chunks of
    `--chunk` tokens after a `--prefix`-token prefix;
  * the host time a launch takes before it returns (if it exceeds the device time, the step is
    bound by Python, not by the GPU);
  * the kernels of one packed continuation prefill, grouped by name;
  * with --trace, the 32-chat reuse scenario of multi_turn.py with every engine step logged
    (when it was launched, its prefill tokens and chunks, its decode rows).
Run: python benchmarks/prefill_profile.py --fixture DIR --out DIR [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_throughput import checkpoint_settings

from bot.engine.cache import CacheShape
from bot.engine.loading import load_tokenizer, load_weights
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PREFILL_TOKENS_PER_ITERATION, PrefillChunk

log = logging.getLogger("prefill_profile")
SLOTS, SLOT_TOKENS = 32, 4608


def ids(count: int, seed: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(1000, 150000, (count,), generator=generator).tolist())


def fill_prefixes(runner: ModelRunner, prefix: int, slots: int) -> None:
    for slot in range(slots):
        for start in range(0, prefix, 2048):
            size = min(2048, prefix - start)
            runner.prefill([PrefillChunk(slot, ids(size, slot * 100 + start), start)])
    torch.cuda.synchronize()


def timed(run, repeats: int = 7) -> dict:
    """Median device-synchronized seconds of run(), and the host seconds before it returned."""
    run()
    torch.cuda.synchronize()
    walls, hosts = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        hosts.append(time.perf_counter() - started)
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - started)
    return {
        "ms": 1000 * sorted(walls)[repeats // 2],
        "host_ms": 1000 * sorted(hosts)[repeats // 2],
    }


def kernel_table(run, rows: int = 20) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = totals.setdefault(event.name[:90], [0.0, 0])
            us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            entry[0] += us
            entry[1] += 1
    all_us = sum(v[0] for v in totals.values())
    log.info("continuation prefill: %.2f ms of GPU time", all_us / 1000)
    table = []
    for name, (us, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:rows]:
        log.info("  %7.0f us %5d x %5.1f%%  %s", us, count, 100 * us / all_us, name)
        table.append({"kernel": name, "us": round(us, 1), "count": count})
    return table


def measure(runner: ModelRunner, args: argparse.Namespace) -> dict:
    report: dict = {"cold": {}, "continuation": {}}
    for size in (32, 128, 512, 1024, 2048):
        report["cold"][size] = timed(
            lambda size=size: runner.prefill([PrefillChunk(0, ids(size, 7))])
        )
        log.info("cold %4d tokens: %s", size, report["cold"][size])
    fill_prefixes(runner, args.prefix, 8)
    for count in (1, 2, 4, 8):
        per_chunk = min(args.chunk, PREFILL_TOKENS_PER_ITERATION // count)
        chunks = [PrefillChunk(s, ids(per_chunk, 50 + s), args.prefix) for s in range(count)]
        key = f"{count}x{per_chunk}@{args.prefix}"
        report["continuation"][key] = timed(lambda chunks=chunks: runner.prefill(chunks))
        log.info("continuation %s: %s", key, report["continuation"][key])
    chunks = [PrefillChunk(s, ids(args.chunk, 50 + s), args.prefix) for s in range(4)]
    report["kernels_4_continuations"] = kernel_table(lambda: runner.prefill(chunks))
    for batch in (1, 8, 32):
        slots = list(range(batch))
        runner.positions[:batch] = args.prefix

        def step(slots=slots, batch=batch):
            runner.positions[:batch] = args.prefix
            runner.launch([], [], slots, args.prefix + 8)

        report.setdefault("decode", {})[batch] = timed(step)
        log.info("decode %2d rows: %s", batch, report["decode"][batch])
    return report


def trace_scenario(weights, tokenizer, *, reuse: bool) -> dict:
    """multi_turn.py's 32-chat scenario with each launch recorded."""
    import multi_turn

    steps: list[dict] = []
    original = ModelRunner.launch

    def launch(self, chunks, completing, decode_slots, max_position):
        steps.append(
            {
                "t": time.perf_counter(),
                "prefill_tokens": sum(len(c.token_ids) for c in chunks),
                "chunks": len(chunks),
                "completing": sum(completing),
                "decode_rows": len(decode_slots),
            }
        )
        return original(self, chunks, completing, decode_slots, max_position)

    ModelRunner.launch = launch
    try:
        result = asyncio.run(
            multi_turn.scenario(
                weights,
                tokenizer,
                chats=32,
                reuse=reuse,
                prefill_tokens=PREFILL_TOKENS_PER_ITERATION,
            )
        )
    finally:
        ModelRunner.launch = original
    origin = steps[0]["t"] if steps else 0.0
    for step in steps:
        step["t"] -= origin
    return {"result": result, "steps": summarize_steps(steps), "raw_steps": steps}


def summarize_steps(steps: list[dict]) -> dict:
    """How many steps prefilled and how long they took (launch to next launch), by kind."""
    gaps = [after["t"] - before["t"] for before, after in itertools.pairwise(steps)]
    prefill = [gap for gap, step in zip(gaps, steps, strict=False) if step["prefill_tokens"]]
    decode = [gap for gap, step in zip(gaps, steps, strict=False) if not step["prefill_tokens"]]
    return {
        "steps": len(steps),
        "prefill_steps": len(prefill),
        "prefill_tokens": sum(step["prefill_tokens"] for step in steps),
        "median_prefill_step_s": sorted(prefill)[len(prefill) // 2] if prefill else None,
        "prefill_seconds": sum(prefill),
        "median_decode_step_s": sorted(decode)[len(decode) // 2] if decode else None,
        "decode_seconds": sum(decode),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/dev/shm/r1-14b-random"))
    parser.add_argument("--quantization", default="int4")
    parser.add_argument("--prefix", type=int, default=3300)
    parser.add_argument("--chunk", type=int, default=505)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = checkpoint_settings(args.fixture, args.checkpoint, args.quantization)
    weights = load_weights(settings)
    runner = ModelRunner(weights, CacheShape(SLOTS, SLOT_TOKENS))
    runner.warm_up()
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "quantization": args.quantization,
        "prefill_tokens_per_iteration": PREFILL_TOKENS_PER_ITERATION,
    }
    report.update(measure(runner, args))
    (args.out / "prefill_profile.json").write_text(json.dumps(report, indent=2))
    del runner
    torch.cuda.empty_cache()
    if args.trace:
        tokenizer = load_tokenizer(settings)
        for mode, reuse in (("reuse", True), ("no_reuse", False)):
            trace = trace_scenario(weights, tokenizer, reuse=reuse)
            # Every step, for a closer look; the summary goes in the report.
            raw = trace.pop("raw_steps")
            (args.out / f"prefill_trace_{mode}.json").write_text(json.dumps(raw))
            report[f"trace_{mode}"] = trace
            log.info("%s: %s", mode, json.dumps(trace)[:400])
        (args.out / "prefill_profile.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
