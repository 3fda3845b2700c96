"""An answer longer than one Telegram message: split at word boundaries, nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes.telegram_html import utf16_len
from tests.frontends.telegram_harness import Scripted, build_scripted, final_texts, running_bot
from tests.support.models import distinct_word_ids

USER = 42
TELEGRAM_LIMIT = 4096


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    """A few words of reasoning, then about 4800 characters of distinct long words."""
    words = distinct_word_ids(tokenizer, 440, min_length=9)  # few tokens: a fast test
    # Hidden size 128 (not 256): the model's step is mostly its lm_head, 152064 x hidden.
    return build_scripted(tokenizer, num_reasoning_words=5, answer=words, hidden_size=128)


@pytest.mark.slow  # the tiny model writes about 450 tokens on the CPU: 6-8 s
@pytest.mark.parametrize("reasoning", ["hidden", "collapsed"])
async def test_long_answer_is_split_into_whole_messages(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, reasoning: str
) -> None:
    assert len(scripted.answer) > TELEGRAM_LIMIT + 400
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"reasoning": reasoning}
    ) as bot:
        bot.tg.push_text(USER, "Tell me everything")
        await bot.tg.wait_for(lambda: len(final_texts(bot.tg, USER)) >= 2, timeout=20)
        await bot.wait_idle(timeout=20)
        stored = await bot.stored(USER, USER)
    texts = bot.tg.chat(USER).texts
    assert len(texts) == 2
    assert all(utf16_len(text) <= TELEGRAM_LIMIT for text in texts)
    assert stored[-1].content == scripted.answer and stored[-1].status == "complete"
    shown = " ".join(texts)
    if reasoning == "collapsed":
        assert texts[0].startswith(scripted.reasoning + "\n")
        shown = shown.removeprefix(scripted.reasoning + "\n")
    # Cut between words; together the messages are the whole answer.
    assert shown == scripted.answer
    draft_ids = {d.draft_id for d in bot.tg.chat(USER).drafts}
    assert len(draft_ids) == 2  # each message streamed as its own draft
