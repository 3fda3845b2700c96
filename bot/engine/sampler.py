"""Per-row temperature and nucleus sampling on the device, with no host synchronisation."""

from __future__ import annotations

import torch

# Sampling draws from the most likely SAMPLING_CANDIDATES tokens of each row. Sorting the whole
# 152k vocabulary every step cost more than the rest of sampling together; a nucleus wider than
# this is vanishingly rare with top_p < 1 and sane temperatures (transformers' generate() even
# cuts at top_k=50 by default, the notebook's way included).
SAMPLING_CANDIDATES = 256


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token per row of `logits` (float32); greedy where the row's temperature is 0."""
    # argmax, not topk's first entry: its first-index tie rule is transformers' greedy one,
    # while CUDA topk promises no order among ties.
    greedy = logits.argmax(dim=-1)
    scaled = logits / temperature.clamp_min(1e-5)[:, None]
    top, order = scaled.topk(min(SAMPLING_CANDIDATES, scaled.shape[-1]), dim=-1)  # descending
    # Normalised over the whole vocabulary, so top_p means the same as with a full sort.
    sorted_probs = torch.exp(top - scaled.logsumexp(dim=-1, keepdim=True))
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before > top_p[:, None], 0.0)
    # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p, with no multinomial sync.
    noise = torch.empty_like(sorted_probs).exponential_(1.0, generator=generator)
    choice = (sorted_probs / noise).argmax(dim=-1, keepdim=True)
    sampled = order.gather(-1, choice)[:, 0]
    return torch.where(temperature > 0, sampled, greedy)
