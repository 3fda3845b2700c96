"""What users can do beyond plain questions, end to end on Telegram: math, /id, replies, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.frontends.telegram_harness import (
    Bot,
    Scripted,
    build_scripted,
    final_texts,
    running_bot,
)

USER = 42
GROUP = -1001234567890
ALICE = 501
# A scripted model follows each token with one successor: no token may repeat differently.
MATH_ANSWER = r"Half is $\frac12$, so \[\boxed{7}\]"
MATH_SHOWN = "Half is ½, so\n7"


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=10, answer=MATH_ANSWER)


async def _answered(bot: Bot, chat_id: int, count: int = 1) -> list[str]:
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, chat_id)) >= count)
    await bot.wait_idle()
    return final_texts(bot.tg, chat_id)


async def test_math_in_the_answer_shows_as_unicode(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"reasoning": "hidden"}
    ) as bot:
        bot.tg.push_text(USER, "What is 7?")
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert texts == [MATH_SHOWN]
    message = bot.tg.chat(USER).last_bot_message
    assert message is not None and message.raw is not None and "<b>7</b>" in message.raw
    # Only the display changes: the model's own words are stored (and prompted) as written.
    assert stored[-1].content == scripted.answer
