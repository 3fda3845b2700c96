"""A scripted tiny model whose answer never ends: for stopping, timeouts and concurrency tests."""

from __future__ import annotations

from typing import Any

import torch

from tests.support.models import EOS_ID, SCRIPT_LOGIT, build_scripted_model


def build_looping_model(tokenizer: Any, lead: str, loop: str) -> Any:
    """A model that writes `lead`, then `loop` over and over, until it is stopped or cut.

    Built as a scripted model for `lead + loop` (then EOS), with the last loop token's successor
    moved from EOS back to the first loop token. `loop`'s tokens must not occur in `lead`.
    """
    lead_ids = tokenizer.encode(lead, add_special_tokens=False)
    loop_ids = tokenizer.encode(loop, add_special_tokens=False)
    if set(loop_ids) & set(lead_ids) or len(set(loop_ids)) != len(loop_ids):
        raise ValueError("each loop token must be its own and not occur in the lead")
    model = build_scripted_model(tokenizer, [*lead_ids, *loop_ids])
    with torch.no_grad():
        code = model.model.embed_tokens.weight[loop_ids[-1]]
        scale = SCRIPT_LOGIT / model.config.hidden_size  # as build_scripted_model wires it
        model.lm_head.weight[EOS_ID] -= scale * code
        model.lm_head.weight[loop_ids[0]] += scale * code
    return model
