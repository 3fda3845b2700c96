"""Reference prompts and transformers' own greedy tokens, which the engine must reproduce."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tests.engine import streams

NUM_REFERENCE_TOKENS = 14
TEXTS = (
    "你好",
    "What is the capital of France?",
    "Write a haiku about the sea, please: five, seven and five syllables.",
    "Explain, step by step, why the sky is blue at noon but red at sunset. Use **Markdown**.",
)


def chat_prompt(tokenizer, text: str) -> list[int]:
    return list(streams.chat_prompt(tokenizer, text))


def generate_greedy(model, prompt: Sequence[int], num_tokens: int) -> list[int]:
    """transformers' greedy tokens after `prompt` (EOS not special, so always `num_tokens`)."""
    ids = torch.tensor([list(prompt)])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=num_tokens,
            min_new_tokens=num_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()
