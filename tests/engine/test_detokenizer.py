"""IncrementalDetokenizer against the real DeepSeek-R1 (Qwen2 byte-level BPE) tokenizer."""

from __future__ import annotations

import random

import pytest

from bot.engine.detokenizer import IncrementalDetokenizer

EOS = 151643
THINK, END_THINK = 151648, 151649

TEXTS = {
    "chinese": "你好，世界！这是一个测试：深度求索。",
    "emoji": "ok 👍 🎉🫠🦜 done 🫠",
    "zwj_family": "family 👨‍👩‍👧‍👦 and coder 👩‍💻 and rainbow 🏳️‍🌈",
    "flags": "flags 🇯🇵🇩🇪🇺🇸 end",
    "skin_tone": "wave 👋🏽 thumbs 👍🏿",
    "mixed_reasoning": "让我想想 🤔 the user wants X.\n</think>\n\n**答案**: 42 ✅",
    "whitespace": "  leading\n\n\ttab   spaces \n\n\n trailing  \n",
    "markdown": "# Title\n\n- item `code`\n\n```python\nprint('hi')\n```\n",
    "tags_only": "<think></think><think>\n",
}


def stream(detokenizer: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    """Every delta of pushing `ids` one by one, then the flush."""
    return [detokenizer.push(token_id) for token_id in ids] + [detokenizer.flush()]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_round_trip_never_splits_a_character(tokenizer, name):
    text = TEXTS[name]
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = stream(IncrementalDetokenizer(tokenizer), ids)
    assert "".join(deltas) == text
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in delta for delta in deltas)


def test_the_text_actually_needs_holding_back(tokenizer):
    # The premise of the test above: these texts have tokens that are a fraction of a character.
    ids = tokenizer.encode(TEXTS["zwj_family"] + TEXTS["chinese"], add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([token_id]) for token_id in ids)


def test_emoji_bytes_are_held_until_the_character_is_complete(tokenizer):
    ids = tokenizer.encode("🫠", add_special_tokens=False)  # three tokens, one character
    assert len(ids) == 3
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert [detokenizer.push(token_id) for token_id in ids[:-1]] == ["", ""]
    assert detokenizer.push(ids[-1]) == "🫠"
    assert detokenizer.flush() == ""


def test_think_tags_are_kept_and_eos_is_skipped(tokenizer):
    ids = [THINK, *tokenizer.encode("hmm", add_special_tokens=False), END_THINK]
    ids += [*tokenizer.encode("\n\nhi", add_special_tokens=False), EOS]
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert "".join(stream(detokenizer, ids)) == "<think>hmm</think>\n\nhi"


def test_flush_releases_an_incomplete_character_like_a_full_decode(tokenizer):
    ids = tokenizer.encode("a🫠", add_special_tokens=False)[:-1]
    detokenizer = IncrementalDetokenizer(tokenizer)
    pushed = "".join(detokenizer.push(token_id) for token_id in ids)
    flushed = detokenizer.flush()
    assert flushed.endswith("\ufffd")
    assert pushed + flushed == tokenizer.decode(ids, skip_special_tokens=True)
    assert detokenizer.flush() == ""


def test_ids_past_the_tokenizer_vocabulary_give_no_text(tokenizer):
    # The model's vocab (152064) is larger than the tokenizer's (151665): padding rows.
    hello = tokenizer.encode("Hello", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert "".join(stream(detokenizer, [151700, *hello, 152063])) == "Hello"


def test_random_token_sequences_match_a_full_decode(tokenizer):
    # Byte tokens (ids < 256) split characters, specials are skipped, ids past the vocab are
    # empty: pushing one by one must still give exactly what decoding everything gives.
    rng = random.Random(1234)
    pools = [
        lambda: rng.randrange(0, 256),
        lambda: rng.randrange(256, 151643),
        lambda: rng.randrange(151643, 151665),
        lambda: rng.randrange(151665, 152064),
    ]
    for _ in range(200):
        ids = [rng.choice(pools)() for _ in range(rng.randrange(1, 30))]
        deltas = stream(IncrementalDetokenizer(tokenizer), ids)
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True), ids


class CountingTokenizer:
    """Wraps a tokenizer and records how many ids each decode call gets."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.all_special_ids = tokenizer.all_special_ids
        self.added_tokens_decoder = tokenizer.added_tokens_decoder
        self.window_sizes: list[int] = []

    def decode(self, ids, **kwargs) -> str:
        self.window_sizes.append(len(ids))
        return self._tokenizer.decode(ids, **kwargs)


def test_each_token_decodes_only_a_small_window(tokenizer):
    text = (TEXTS["mixed_reasoning"] + TEXTS["zwj_family"]) * 40
    ids = tokenizer.encode(text, add_special_tokens=False)
    counting = CountingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(counting)
    assert "".join(stream(detokenizer, ids)) == text
    assert len(ids) > 1000
    # A character is at most 4 bytes, so at most a few tokens are ever pending.
    assert max(counting.window_sizes) <= 8
    assert len(counting.window_sizes) <= 2 * len(ids) + 2


def test_many_special_tokens_in_a_row_do_not_grow_the_window(tokenizer):
    counting = CountingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(counting)
    assert "".join(stream(detokenizer, [EOS] * 500 + [151646, 151650])) == ""
    assert counting.window_sizes == []
