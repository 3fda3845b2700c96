"""Where a decode step's time goes on a GPU, and what candidate kernel changes would save.

Loads the random-weight 14B checkpoint that engine_throughput.py builds (building it if needed),
fills `--batch` slots with 256-token prompts, then
  * prints the kernels of one eager step at batch 1 and `--batch`, grouped by name, with their
    share of GPU time (what to optimize next);
  * times CUDA-graph decode steps at batch 1-4, 8 and `--batch` (no engine around them).
Run: python benchmarks/decode_profile.py --fixture DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_throughput import checkpoint_settings, random_prompts

from bot.engine.cache import CacheShape
from bot.engine.loading import load_weights
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PrefillChunk

log = logging.getLogger("profile")
PROMPT = 256


def fill(runner: ModelRunner, batch: int) -> None:
    prompts = random_prompts(batch, PROMPT, seed=1)
    for slot in range(batch):
        runner.set_sampling(slot, 0.6, 0.95)
    for start in range(0, batch, 8):
        chunks = [PrefillChunk(s, tuple(prompts[s])) for s in range(start, min(batch, start + 8))]
        runner.launch(chunks, [True] * len(chunks), [], 0).wait()


def time_steps(runner: ModelRunner, batch: int, steps: int) -> float:
    """Median seconds of one graph-replayed decode step at `batch`."""
    slots = list(range(batch))
    runner.positions[:batch] = PROMPT
    runner.launch([], [], slots, PROMPT).wait()  # capture outside the timing
    times = []
    for _ in range(steps):
        runner.positions[:batch] = PROMPT
        torch.cuda.synchronize()
        started = time.perf_counter()
        runner.launch([], [], slots, PROMPT + 50)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def kernel_table(runner: ModelRunner, batch: int, rows: int = 25) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    runner.positions[:batch] = PROMPT
    runner._set_rows(list(range(batch)))
    with torch.inference_mode():
        runner._decode_step(batch, 512)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner._decode_step(batch, 512)
            torch.cuda.synchronize()
    runner.positions[:batch] = PROMPT
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = totals.setdefault(event.name[:90], [0.0, 0])
            us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            entry[0] += us
            entry[1] += 1
    all_us = sum(v[0] for v in totals.values())
    table = [
        {"kernel": name, "us": round(us, 1), "count": count, "share": round(us / all_us, 3)}
        for name, (us, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])
    ]
    log.info(
        "batch %d eager step: %d kernels, %.2f ms of GPU time",
        batch,
        sum(v[1] for v in totals.values()),
        all_us / 1000,
    )
    for row in table[:rows]:
        log.info(
            "  %6.0f us %5d x %5.1f%%  %s",
            row["us"],
            row["count"],
            100 * row["share"],
            row["kernel"],
        )
    return table[:rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/dev/shm/r1-14b-random"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quantization", default="int4")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    weights = load_weights(checkpoint_settings(args.fixture, args.checkpoint, args.quantization))
    runner = ModelRunner(weights, CacheShape(args.batch, 1024))
    runner.warm_up()
    fill(runner, args.batch)
    report: dict = {"quantization": args.quantization, "gpu": torch.cuda.get_device_name(0)}
    report["kernels_batch_1"] = kernel_table(runner, 1)
    report["kernels_batch_n"] = kernel_table(runner, args.batch)

    # Unpadded step times (a bucket for 3 added), to see how a step's cost grows with its rows.
    runner.batch_buckets = tuple(sorted({*runner.batch_buckets, 3}))
    report["step_ms"] = {}
    for batch in sorted({1, 2, 3, 4, 8, args.batch}):
        step = time_steps(runner, batch, args.steps)
        report["step_ms"][batch] = step * 1000
        log.info("batch %3d: %.2f ms a step, %.0f tokens/s", batch, step * 1000, batch / step)
    (args.out / f"decode_profile_{args.quantization}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
