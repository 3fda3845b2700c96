"""Regenerate: the last question answered again; the old answer kept, superseded, unprompted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.types import ChatError
from tests.chat.test_service import ALICE, ANSWER, SCRIPT, Listener, ask, prompt_text, running
from tests.support.models import build_scripted_model


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Any:
    return build_scripted_model(tokenizer, SCRIPT)


async def test_regenerate_answers_again_and_keeps_the_old_answer_out_of_prompts(
    scripted: Any, tokenizer: Any, tmp_path: Path
) -> None:
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        with pytest.raises(ChatError, match="no answer of mine to regenerate"):
            await app.service.regenerate(ALICE)
        await ask(app, ALICE, "Hi there")
        again = await Listener(await app.service.regenerate(ALICE)).finish()
        await ask(app, ALICE, "And now?")
        stored = await app.store.query_messages()
        history = await app.store.history(ALICE)
    first, regenerated, later = (prompt_text(tokenizer, r) for r in engine.requests)
    assert regenerated == first  # the same question, asked the same way
    assert later.count(ANSWER) == 1  # the superseded answer is not prompted
    assert again.answer == ANSWER
    assert [(m.role, m.content, m.superseded_at is not None) for m in stored] == [
        ("user", "Hi there", False),
        ("assistant", ANSWER, True),
        ("assistant", ANSWER, False),
        ("user", "And now?", False),
        ("assistant", ANSWER, False),
    ]
    assert [m.id for m in history] == [stored[0].id, *(m.id for m in stored[2:])]
