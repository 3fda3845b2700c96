"""The test helpers themselves: fixture location, tiny configs, random and scripted models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from bot.engine.detokenizer import IncrementalDetokenizer
from tests.support import FIXTURE_ENV, fixture_dir, has_fixture
from tests.support.models import (
    EOS_ID,
    build_random_model,
    build_scripted_model,
    distinct_word_ids,
    save_model_folder,
    tiny_config,
)

ASSISTANT_START = [151645, 151648, 198]  # <｜Assistant｜><think>\n
REASONING = "Okay, the user greets me in Chinese and I should answer politely."
ANSWER = "# 你好!\n\nIt is a **nice** day 👩‍💻 🇯🇵 — `print(42)`"
SCRIPT = f"{REASONING}</think>\n\n{ANSWER}"


def prompt_ids(tokenizer, text: str = "你好") -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
    )


def generate(model, ids: list[int], *, max_new_tokens: int, do_sample: bool) -> list[int]:
    """Generated ids after `ids` (the fixture's sampling settings when do_sample)."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=0.6 if do_sample else None,
            top_p=0.95 if do_sample else None,
            pad_token_id=EOS_ID,
        )
    return out[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def script_ids(tokenizer) -> list[int]:
    return tokenizer.encode(SCRIPT, add_special_tokens=False)


@pytest.fixture(scope="module")
def scripted_model(tokenizer):
    return build_scripted_model(tokenizer, SCRIPT)


# -- fixture location


def test_fixture_dir_defaults_to_the_shared_folder_next_to_the_repo(monkeypatch):
    monkeypatch.delenv(FIXTURE_ENV, raising=False)
    repo = Path(__file__).resolve().parents[1]
    expected = repo.parent / "shared" / "fixtures" / "deepseek-r1-distill-qwen-14b"
    assert fixture_dir() == expected


def test_fixture_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(FIXTURE_ENV, str(tmp_path))
    assert fixture_dir() == tmp_path
    assert not has_fixture(tmp_path)


def test_the_fixture_is_present(fixture_path):
    assert has_fixture(fixture_path)


# -- tiny models


def test_tiny_config_keeps_the_vocab_and_shrinks_the_rest(fixture_path):
    config = tiny_config()
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.intermediate_size == 128
    assert config.vocab_size == 152064
    assert config.rms_norm_eps == 1e-5
    assert tiny_config(num_hidden_layers=3).num_hidden_layers == 3


def test_random_model_is_tiny_float32_eval_and_seeded(random_model):
    assert not random_model.training
    assert random_model.dtype == torch.float32
    assert random_model.lm_head.out_features == 152064
    assert sum(p.numel() for p in random_model.parameters()) < 25_000_000
    same = build_random_model(seed=0)
    other = build_random_model(seed=1)
    weight = random_model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(same.model.layers[0].self_attn.q_proj.weight, weight)
    assert not torch.equal(other.model.layers[0].self_attn.q_proj.weight, weight)


def test_random_model_generates_from_a_real_prompt(random_model, tokenizer):
    new = generate(random_model, prompt_ids(tokenizer), max_new_tokens=5, do_sample=True)
    assert 1 <= len(new) <= 5
    assert all(0 <= token_id < 152064 for token_id in new)


# -- scripted model


def test_the_chat_template_ends_with_the_scripted_start(tokenizer):
    assert prompt_ids(tokenizer)[-3:] == ASSISTANT_START


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_scripted_model_emits_the_script_then_eos(scripted_model, tokenizer, script_ids, do_sample):
    new = generate(
        scripted_model,
        prompt_ids(tokenizer),
        max_new_tokens=len(script_ids) + 5,
        do_sample=do_sample,
    )
    assert new == [*script_ids, EOS_ID]


def test_scripted_text_decodes_exactly(scripted_model, tokenizer, script_ids):
    new = generate(scripted_model, ASSISTANT_START, max_new_tokens=200, do_sample=False)
    assert 151649 in new  # </think> is one token
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert text == SCRIPT
    reasoning, answer = text.split("</think>")
    assert reasoning == REASONING
    assert answer == "\n\n" + ANSWER
    assert "你好" in answer and "👩\u200d💻" in answer and "🇯🇵" in answer and "**nice**" in answer
    assert tokenizer.decode(new[-1:]) == "<｜end▁of▁sentence｜>"
    detokenizer = IncrementalDetokenizer(tokenizer)
    streamed = "".join(detokenizer.push(token_id) for token_id in new) + detokenizer.flush()
    assert streamed == SCRIPT


def test_scripted_sampling_is_certain(scripted_model, script_ids):
    ids = ASSISTANT_START + script_ids
    with torch.no_grad():
        logits = scripted_model(torch.tensor([ids])).logits[0, len(ASSISTANT_START) - 1 :]
    probabilities = torch.softmax(logits / 0.6, dim=-1)
    targets = torch.tensor([*script_ids, EOS_ID])
    assert probabilities.gather(1, targets[:, None]).min() > 1 - 1e-6


def test_a_prompt_that_does_not_end_the_scripted_way_gets_eos(scripted_model, tokenizer):
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    assert generate(scripted_model, ids, max_new_tokens=3, do_sample=True) == [EOS_ID]


def test_scripted_model_accepts_ids_and_another_start(tokenizer):
    ids = tokenizer.encode(" one two", add_special_tokens=False)
    model = build_scripted_model(tokenizer, ids, after=151649)
    assert generate(model, [151649], max_new_tokens=5, do_sample=False) == [*ids, EOS_ID]


def test_a_token_with_two_successors_is_refused(tokenizer):
    ids = tokenizer.encode(" a b a c", add_special_tokens=False)
    a_id = ids[0]
    with pytest.raises(ValueError, match=rf"token {a_id} \(' a'\)"):
        build_scripted_model(tokenizer, ids)


def test_a_lone_newline_conflicts_with_the_prompt_end(tokenizer):
    # "\n" alone is token 198, which ends the prompt and must lead to the script's first token.
    with pytest.raises(ValueError, match=r"token 198 \('\\n'\)"):
        build_scripted_model(tokenizer, "first\nsecond")


def test_eos_inside_a_script_is_refused(tokenizer):
    with pytest.raises(ValueError, match="EOS"):
        build_scripted_model(tokenizer, [9707, EOS_ID, 1879])


def test_distinct_words_decode_to_plain_words_with_a_leading_space(tokenizer):
    ids = distinct_word_ids(tokenizer, 300)
    words = [tokenizer.decode([token_id]) for token_id in ids]
    assert len(set(ids)) == len(set(words)) == 300
    assert all(word.startswith(" ") and word[1:].isalpha() and word[1:].islower() for word in words)
    assert tokenizer.encode("".join(words), add_special_tokens=False) == ids


def test_a_long_scripted_answer_of_distinct_words(tokenizer):
    words = distinct_word_ids(tokenizer, 600, min_length=6)
    script = [*tokenizer.encode("Long.", add_special_tokens=False), 151649, *words]
    model = build_scripted_model(tokenizer, script)
    answer = tokenizer.decode(words)
    assert len(answer) > 4096
    ids = ASSISTANT_START + script
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, len(ASSISTANT_START) - 1 :]
    top = logits.topk(2, dim=-1)
    assert top.indices[:, 0].tolist() == [*script, EOS_ID]
    # A lead of 40 at temperature 0.6 leaves the other 152063 tokens < 1e-25 in all.
    assert (top.values[:, 0] - top.values[:, 1]).min() > 40


# -- saved folders


def test_saved_folder_loads_offline_and_generates_the_script(
    scripted_model, tokenizer, script_ids, tmp_path, monkeypatch, fixture_path
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_model_folder(scripted_model, tokenizer, tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert loaded.dtype == torch.float32
    assert loaded.config.vocab_size == 152064
    assert loaded_tokenizer.encode(SCRIPT, add_special_tokens=False) == script_ids
    assert loaded.generation_config.to_dict() == (
        GenerationConfig.from_pretrained(fixture_path).to_dict()
    )
    assert (folder / "generation_config.json").read_bytes() == (
        fixture_path / "generation_config.json"
    ).read_bytes()
    prompt = loaded_tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    new = generate(loaded, list(prompt), max_new_tokens=len(script_ids) + 5, do_sample=True)
    assert new == [*script_ids, EOS_ID]


def test_random_model_folder_loads(random_model_folder, random_model):
    loaded = AutoModelForCausalLM.from_pretrained(random_model_folder)
    weight = random_model.model.layers[1].mlp.up_proj.weight
    assert torch.equal(loaded.model.layers[1].mlp.up_proj.weight, weight)
