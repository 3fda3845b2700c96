"""What users can do beyond plain questions, end to end on Discord: math, /id, replies, files."""

from __future__ import annotations

from typing import Any

import pytest

from tests.frontends.discord_harness import is_done, running_bot
from tests.support.models import build_scripted_model

# A scripted model follows each token with one successor: no token may repeat differently.
ANSWER = r"Half is $\frac12$, so \[\boxed{7}\]"
ANSWER_SHOWN = "Half is ½, so \n**7**"
SCRIPT = f"Let me think. </think>\n\n{ANSWER}"


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    return build_scripted_model(tokenizer, SCRIPT)


async def test_math_in_the_answer_shows_as_unicode(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path, chat={"reasoning": "hidden"}) as bot:
        rec = await bot.dc.slash(bot.alice, "chat", prompt="What is 7?", guild=bot.guild)
        await bot.dc.wait_for(lambda: is_done(rec.original))
        await bot.wait_idle()
        stored = await bot.stored(bot.guild.default_channel.id, bot.alice)
    assert rec.original.content == ANSWER_SHOWN
    # Every streamed edit showed the math converted or held back, never as LaTeX.
    assert not any("\\" in snapshot.content for snapshot in rec.original.history)
    assert stored[-1].content == ANSWER
