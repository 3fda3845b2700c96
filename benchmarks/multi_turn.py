"""Multi-turn dialogues on a GPU: the KV cache kept across turns (prefix reuse) on vs off.

Random-weight model with DeepSeek-R1-Distill-Qwen-14B's config (engine_throughput.py builds the
checkpoint). Each dialogue has 8 turns: a ~300-token user message, then a 300-token answer (EOS
ignored). Prompts follow R1's template, which drops an earlier answer's reasoning: the answer a
later prompt resends is a 200-token "visible part", not the tokens generated, so the cached
prefix a turn can reuse ends where the previous answer began, as with the real model. Turn 8
carries about 3,800 tokens of history.

Measured in one run, with reuse on and off:
  * one chat alone: first-token time of each turn (turn 8 is the headline);
  * 32 chats at once, each sending its next turn when the last answer ended: first-token p50
    and p95 per turn, total generated tokens/s, and the share of prompt tokens reused.
Writes multi_turn.json and multi_turn.png.
Run: python benchmarks/multi_turn.py --fixture DIR --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_throughput import TEMPERATURE, TOP_P, checkpoint_settings, percentile

from bot.engine.base import Finished, GenerationRequest, SamplingParams
from bot.engine.cache import CacheShape
from bot.engine.loading import load_tokenizer, load_weights
from bot.engine.local import LocalEngine
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PREFILL_TOKENS_PER_ITERATION

log = logging.getLogger("multi_turn")
BOS, USER, ASSISTANT, EOS, THINK, NEWLINE = 151646, 151644, 151645, 151643, 151648, 198
TURNS, USER_TOKENS, ANSWER_TOKENS, VISIBLE_ANSWER_TOKENS = 8, 300, 300, 200
WARM_UP_CHAT = 999


def words(seed: int, count: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 150000, (count,), generator=generator).tolist()


def prompt(chat: int, turn: int) -> tuple[int, ...]:
    """Turn `turn` (0-based) of dialogue `chat` in R1's template."""
    ids = [BOS]
    for earlier in range(turn):
        ids += [USER, *words(chat * 1000 + earlier, USER_TOKENS), ASSISTANT]
        ids += [*words(chat * 1000 + 500 + earlier, VISIBLE_ANSWER_TOKENS), EOS]
    ids += [USER, *words(chat * 1000 + turn, USER_TOKENS), ASSISTANT, THINK, NEWLINE]
    return tuple(ids)


async def dialogue(engine: LocalEngine, chat: int, results: list[dict]) -> None:
    for turn in range(TURNS):
        stream = engine.submit(
            GenerationRequest(
                prompt(chat, turn),
                SamplingParams(
                    max_new_tokens=ANSWER_TOKENS,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    timeout_seconds=3600,
                ),
                owner=f"user{chat}",
                dialogue=f"chat{chat}",
            )
        )
        finished = None
        async for event in stream:
            if isinstance(event, Finished):
                finished = event
        results.append(
            {
                "chat": chat,
                "turn": turn + 1,
                "prompt_tokens": finished.num_prompt_tokens,
                "reused_tokens": finished.num_reused_tokens,
                "first_token_s": finished.first_token_seconds,
                "generated": finished.num_generated_tokens,
            }
        )


async def scenario(weights, tokenizer, *, chats: int, reuse: bool, prefill_tokens: int) -> dict:
    shape = CacheShape(num_slots=max(chats, 2), slot_tokens=4608)
    runner = ModelRunner(weights, shape, use_cuda_graphs=True, seed=0)
    engine = LocalEngine(
        runner,
        tokenizer,
        eos_token_ids=(),
        max_queue=1024,
        prefix_reuse=reuse,
        prefill_tokens=prefill_tokens,
    )
    results: list[dict] = []
    async with engine:
        # First-use effects (kernels tuned per shape, prefills that continue a cached prefix)
        # out of the way: a whole throwaway dialogue of its own, not counted.
        await dialogue(engine, WARM_UP_CHAT, [])
        started = time.perf_counter()
        await asyncio.gather(*(dialogue(engine, chat, results) for chat in range(chats)))
        wall = time.perf_counter() - started
    del engine, runner
    gc.collect()
    torch.cuda.empty_cache()
    per_turn = {}
    for turn in range(1, TURNS + 1):
        firsts = [r["first_token_s"] for r in results if r["turn"] == turn]
        per_turn[turn] = {"p50": percentile(firsts, 50), "p95": percentile(firsts, 95)}
    late = [r["first_token_s"] for r in results if r["turn"] >= 5]
    return {
        "chats": chats,
        "wall_s": wall,
        "total_tokens_per_s": sum(r["generated"] for r in results) / wall,
        "first_token_by_turn_s": per_turn,
        "p95_first_token_turns_5_to_8_s": percentile(late, 95),
        "reused_prompt_tokens_share": sum(r["reused_tokens"] for r in results)
        / sum(r["prompt_tokens"] for r in results),
        "turn8_prompt_tokens": max(r["prompt_tokens"] for r in results if r["turn"] == TURNS),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    turns = list(range(1, TURNS + 1))
    for ax, key, title in (
        (axes[0], "one_chat", "one chat: first token per turn"),
        (axes[1], "32_chats", "32 chats: first-token p95 per turn"),
    ):
        for mode, color in (("reuse", "tab:green"), ("no_reuse", "tab:red")):
            data = report[key][mode]["first_token_by_turn_s"]
            stat = "p50" if key == "one_chat" else "p95"
            ax.plot(turns, [data[str(t)][stat] for t in turns], "o-", color=color, label=mode)
        ax.set_xlabel("turn")
        ax.set_ylabel("seconds")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"KV reuse across turns, R1-Distill-Qwen-14B shape ({report['quantization']}),"
        f" one {report['gpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/dev/shm/r1-14b-random"))
    parser.add_argument("--quantization", default="int4")
    parser.add_argument(
        "--prefill-tokens",
        type=int,
        default=PREFILL_TOKENS_PER_ITERATION,
        help="prompt tokens prefilled per engine iteration",
    )
    parser.add_argument("--scenarios", default="one_chat,32_chats")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = checkpoint_settings(args.fixture, args.checkpoint, args.quantization)
    weights = load_weights(settings)
    tokenizer = load_tokenizer(settings)
    report: dict = {"gpu": torch.cuda.get_device_name(0), "quantization": args.quantization}
    report["prefill_tokens_per_iteration"] = args.prefill_tokens
    wanted = args.scenarios.split(",")
    for key, chats in (("one_chat", 1), ("32_chats", 32)):
        if key not in wanted:
            continue
        report[key] = {}
        for mode, reuse in (("reuse", True), ("no_reuse", False)):
            result = await scenario(
                weights, tokenizer, chats=chats, reuse=reuse, prefill_tokens=args.prefill_tokens
            )
            # JSON keys are strings; keep the per-turn tables readable either way.
            result["first_token_by_turn_s"] = {
                str(t): v for t, v in result["first_token_by_turn_s"].items()
            }
            report[key][mode] = result
            log.info("%s %s: %s", key, mode, json.dumps(result)[:400])
            (args.out / "multi_turn.json").write_text(json.dumps(report, indent=2))
    if not {"one_chat", "32_chats"} <= report.keys():
        return  # a partial run (--scenarios): its figures are in the JSON and the log
    one, many = report["one_chat"], report["32_chats"]
    report["one_chat_turn8_first_token_s"] = {
        mode: one[mode]["first_token_by_turn_s"][str(TURNS)]["p50"] for mode in one
    }
    report["p95_first_token_turns_5_to_8_s"] = {
        mode: many[mode]["p95_first_token_turns_5_to_8_s"] for mode in many
    }
    report["total_tokens_per_s"] = {mode: many[mode]["total_tokens_per_s"] for mode in many}
    report["reused_prompt_tokens_share"] = many["reuse"]["reused_prompt_tokens_share"]
    (args.out / "multi_turn.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "multi_turn.png")
    for key in (
        "one_chat_turn8_first_token_s",
        "p95_first_token_turns_5_to_8_s",
        "total_tokens_per_s",
        "reused_prompt_tokens_share",
    ):
        print(key, json.dumps(report[key]))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(main())
