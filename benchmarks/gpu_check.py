"""Correctness of the model runner on a GPU (not a benchmark; CI has no GPU).

For a small random Qwen2 model with the real vocabulary it checks, in float32, bf16 and nf4:
  * greedy tokens from our runner (CUDA graphs, rows at different positions in one batch)
    equal transformers' own `generate()` for each prompt alone (float32: exactly;
    bf16/nf4: the share of matching tokens is reported, kernels differ in rounding);
  * graph replay gives the same tokens as the runner's eager path.
Prints one line per check; exits 1 if the float32 check fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine.runner import CacheShape, ModelRunner


def small_config(fixture: Path):
    from transformers import Qwen2Config

    values = json.loads((fixture / "config.json").read_text())
    values.update(
        hidden_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1024,
    )
    return Qwen2Config(**values)


def reference(model, prompts, new_tokens):
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device=model.device)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs


def ours(model, prompts, new_tokens, graphs: bool):
    runner = ModelRunner(model, CacheShape(num_slots=8, slot_tokens=512), use_cuda_graphs=graphs)
    for slot, prompt in enumerate(prompts):
        runner.set_sampling(slot, 0.0, 1.0)
        logits = runner.prefill(slot, prompt, 0, is_last_chunk=True)
        runner.activate(slot, runner.sample_first(logits, slot), len(prompt))
    generated = [[int(runner.input_ids[s])] for s in range(len(prompts))]
    for _ in range(new_tokens - 1):
        max_position = max(len(p) + len(g) - 1 for p, g in zip(prompts, generated, strict=True))
        for row, token in zip(
            generated, runner.decode(len(prompts), max_position).tolist(), strict=True
        ):
            row.append(token)
    return generated


def agreement(a, b) -> float:
    """Share of tokens before the first difference in each row (after one, paths diverge)."""
    total = sum(len(x) for x in a)
    same = 0
    for x, y in zip(a, b, strict=True):
        for p, q in zip(x, y, strict=True):
            if p != q:
                break
            same += 1
    return same / total


def main() -> int:
    from transformers import BitsAndBytesConfig, Qwen2ForCausalLM

    fixture = Path(sys.argv[1])
    config = small_config(fixture)
    torch.manual_seed(0)
    prompts = [torch.randint(1000, 150000, (n,)).tolist() for n in (5, 37, 200, 300)]
    new_tokens = 40
    failed = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(1)
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(config).to(dtype).eval()
        ref = reference(model, prompts, new_tokens)
        graph = ours(model, prompts, new_tokens, graphs=True)
        eager = ours(model, prompts, new_tokens, graphs=False)
        share = agreement(ref, graph)
        print(
            f"{name}: prefix agreement with HF generate {share:.3f}; graph == eager: "
            f"{graph == eager}"
        )
        if name == "float32" and (share < 1.0 or graph != eager):
            failed = True
        if name == "bf16":
            model.save_pretrained("/tmp/small-bf16")
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = Qwen2ForCausalLM.from_pretrained(
        "/tmp/small-bf16", quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
    ).eval()
    ref = reference(model, prompts, new_tokens)
    graph = ours(model, prompts, new_tokens, graphs=True)
    eager = ours(model, prompts, new_tokens, graphs=False)
    print(
        f"nf4: prefix agreement with HF generate {agreement(ref, graph):.3f}; graph == eager: "
        f"{graph == eager}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
