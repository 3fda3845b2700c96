"""Tiny Qwen2 models for tests: random weights, or wired to emit an exact script of tokens."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from tests.support import fixture_dir

EOS_ID = 151643  # <｜end▁of▁sentence｜>
NEWLINE_ID = 198  # the last prompt token: the chat template ends with "<｜Assistant｜><think>\n"
SCRIPT_LOGIT = 100.0  # the scripted successor's logit; every other logit is (about) 0

# The fixture's config.json shrunk to a model that builds and runs in milliseconds. The vocab
# stays 152064 so the real tokenizer fits.
_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "torch_dtype": "float32",
}
_SCRIPTED_HIDDEN_SIZES = (64, 128, 256)  # the smallest that gives every chain token its own axis
_PLAIN_WORD = re.compile(r"Ġ[a-z]+")  # byte-level BPE spells a leading space as "Ġ"


def tiny_config(**overrides: Any) -> Qwen2Config:
    """The fixture's Qwen2Config shrunk (hidden 64, 2 layers, vocab kept), float32; overridable."""
    values = json.loads((fixture_dir() / "config.json").read_text(encoding="utf-8"))
    values.update(_TINY)
    values.update(overrides)
    return Qwen2Config(**values)


def fixture_generation_config() -> GenerationConfig:
    """The real model's generation settings (sampling at temperature 0.6, top_p 0.95)."""
    return GenerationConfig.from_pretrained(fixture_dir())


def build_random_model(seed: int = 0, **config_overrides: Any) -> Qwen2ForCausalLM:
    """A tiny Qwen2ForCausalLM with seeded random weights, in eval mode."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(tiny_config(**config_overrides))
    finally:
        torch.random.set_rng_state(generator_state)  # do not disturb other tests' randomness
    model.generation_config = fixture_generation_config()
    return model.eval()


def build_scripted_model(
    tokenizer: Any,
    script: str | Sequence[int],
    *,
    after: int = NEWLINE_ID,
    hidden_size: int | None = None,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A tiny Qwen2ForCausalLM that, after a prompt ending in `after`, emits `script` then EOS.

    Attention and MLP outputs are zeroed, so the last position's hidden state is its token's
    embedding; each token of the chain gets its own direction, and lm_head maps it to its
    successor with logit 100 (all others about 0), so greedy decoding and sampling at
    temperature 0.6 / top_p 0.95 give the same tokens. Any token outside the chain is
    followed by EOS. A token can have only one successor: ValueError when `script` needs two.
    """
    ids = _script_ids(tokenizer, script)
    successors = _successors([after, *ids, EOS_ID], tokenizer)
    chain = list(successors)  # tokens with a scripted successor, in order of appearance
    hidden = hidden_size or next(
        (size for size in _SCRIPTED_HIDDEN_SIZES if len(chain) < size), _SCRIPTED_HIDDEN_SIZES[-1]
    )
    config = tiny_config(hidden_size=hidden)
    codes = _codes(len(chain) + 1, hidden, seed)  # the last code is for "not in the script"
    embedding, head = _script_weights(config, chain, successors, codes)
    model = _model_with_vocab_weights(config, embedding, head)
    for layer in model.model.layers:
        # Attention and MLP add nothing to the residual stream.
        for projection in (layer.self_attn.o_proj, layer.mlp.down_proj):
            torch.nn.init.zeros_(projection.weight)
            if projection.bias is not None:
                torch.nn.init.zeros_(projection.bias)
    outside = min(set(range(len(chain) + 1)) - set(chain))  # some token not in the chain
    _check_script_margins(model, chain, successors, outside=outside)
    model.generation_config = fixture_generation_config()
    return model.eval()


def distinct_word_ids(tokenizer: Any, n: int, *, min_length: int = 4) -> list[int]:
    """`n` token ids that each decode to a different lowercase word with a leading space."""
    vocab_size = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    found: list[int] = []
    for token_id, piece in enumerate(pieces):
        if not (_PLAIN_WORD.fullmatch(piece) and len(piece) > min_length):
            continue
        # Only words that tokenize back to this one id, so a scripted text re-encodes the same.
        if tokenizer.encode(" " + piece[1:], add_special_tokens=False) == [token_id]:
            found.append(token_id)
            if len(found) == n:
                return found
    raise ValueError(f"the tokenizer has only {len(found)} plain words of {min_length}+ letters")


def save_model_folder(model: Any, tokenizer: Any, path: str | os.PathLike[str]) -> Path:
    """Save model + tokenizer (+ the fixture's generation_config.json) as one loadable folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copyfile(fixture_dir() / "generation_config.json", folder / "generation_config.json")
    return folder


def _script_ids(tokenizer: Any, script: str | Sequence[int]) -> list[int]:
    ids = (
        tokenizer.encode(script, add_special_tokens=False)
        if isinstance(script, str)
        else [int(token_id) for token_id in script]
    )
    if not ids:
        raise ValueError("the script is empty")
    if EOS_ID in ids:
        raise ValueError("the script contains EOS; it is appended after the script")
    return ids


def _successors(chain: list[int], tokenizer: Any) -> dict[int, int]:
    successors: dict[int, int] = {}
    for token_id, successor in itertools.pairwise(chain):
        known = successors.setdefault(token_id, successor)
        if known != successor:
            raise ValueError(
                f"token {token_id} ({tokenizer.decode([token_id])!r}) would need two successors:"
                f" {known} ({tokenizer.decode([known])!r}) and"
                f" {successor} ({tokenizer.decode([successor])!r}); a scripted model can only"
                " follow one (reword the script, or pass another `after`)"
            )
    return successors


def _codes(count: int, hidden: int, seed: int) -> torch.Tensor:
    """`count` directions of RMS 1: exact axes if they fit, else random signs (near-orthogonal)."""
    if count <= hidden:
        return torch.eye(hidden)[:count] * hidden**0.5
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (count, hidden), generator=generator).float() * 2 - 1


def _script_weights(
    config: Qwen2Config, chain: list[int], successors: dict[int, int], codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = config.hidden_size
    default_code = codes[-1]
    embedding = default_code.expand(config.vocab_size, hidden).clone()
    head = torch.zeros(config.vocab_size, hidden)
    # The final RMSNorm leaves a code of RMS 1 as it is, so code . code = hidden.
    scale = SCRIPT_LOGIT / hidden
    chain_codes = codes[: len(chain)]
    embedding[chain] = chain_codes
    successor_ids = torch.tensor([successors[token_id] for token_id in chain])
    head.index_add_(0, successor_ids, scale * chain_codes)  # several tokens may share one
    head[EOS_ID] += scale * default_code
    return embedding, head


def _model_with_vocab_weights(
    config: Qwen2Config, embedding: torch.Tensor, head: torch.Tensor
) -> Qwen2ForCausalLM:
    """Build the model with a 1-token vocab, then put in the full-vocab weights.

    Random initialisation of two vocab x hidden matrices that are overwritten anyway would take
    most of a second; the layers are small.
    """
    # Token ids must fit the vocabulary of the stand-in; they are the real ones again below.
    small = Qwen2Config(
        **{**config.to_dict(), "vocab_size": 1, "bos_token_id": None, "eos_token_id": None}
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(small)
    finally:
        torch.random.set_rng_state(generator_state)
    model.model.embed_tokens = torch.nn.Embedding.from_pretrained(embedding, freeze=False)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.lm_head.out_features = config.vocab_size
    model.config.vocab_size = config.vocab_size
    model.config.bos_token_id = config.bos_token_id
    model.config.eos_token_id = config.eos_token_id
    for module in (model, model.model):
        if hasattr(module, "vocab_size"):
            module.vocab_size = config.vocab_size
    return model


@torch.no_grad()
def _check_script_margins(
    model: Qwen2ForCausalLM, chain: list[int], successors: dict[int, int], *, outside: int
) -> None:
    """Each token must lead to its successor (`outside` the chain: EOS) by a wide margin."""
    probes = [*chain, outside]
    expected = {**successors, outside: EOS_ID}
    hidden = model.model.norm(model.model.embed_tokens.weight[probes])
    targets = sorted({*expected.values()})
    logits = hidden @ model.lm_head.weight[targets].T
    wanted = torch.tensor([targets.index(expected[token_id]) for token_id in probes])
    best = logits.gather(1, wanted[:, None]).squeeze(1)
    others = logits.scatter(1, wanted[:, None], float("-inf")).amax(1).clamp(min=0.0)
    margin = float((best - others).min())
    if margin < SCRIPT_LOGIT / 2:
        raise ValueError(
            f"the script has {len(chain)} distinct tokens; their directions overlap too much in"
            f" hidden size {model.config.hidden_size} (margin {margin:.1f}): pass a larger"
            " hidden_size"
        )


def weights_with_hookable_head(model: Any) -> Any:
    """The engine's weights of `model`, its LM head still called through the module.

    The engine reads plain tensors out of a transformers model, so hooks on its modules never
    run; the front-end tests slow a model down (or hold it mid-answer) with a forward pre-hook
    on `lm_head`, so here every step's head goes through `model.lm_head` itself.
    """
    from bot.engine.model import DecoderWeights
    from bot.engine.quant.plain import PlainLinear

    class ModuleHead(PlainLinear):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return model.lm_head(x)

    weights = DecoderWeights.from_hf_model(model)
    head = model.lm_head
    weights.lm_head = ModuleHead(head.weight.detach(), head.bias)
    return weights
