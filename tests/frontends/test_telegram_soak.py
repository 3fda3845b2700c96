"""A bounded soak: many users at once on the loopback Bot API; every message gets one answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.frontends.telegram_harness import Scripted, build_scripted, final_texts, running_bot

pytestmark = pytest.mark.slow

NUM_USERS = 50
NUM_MESSAGES = 3
FIRST_USER = 5000
ANSWER = "Fine, thanks."
WAIT = 120.0  # seconds one answer may take on a slow, busy machine before the test fails


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=3, answer=ANSWER)


async def test_fifty_users_three_messages_each_all_answered_once_and_stored(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    users = range(FIRST_USER, FIRST_USER + NUM_USERS)
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        tg = bot.tg

        async def converse(user: int) -> None:
            for turn in range(NUM_MESSAGES):
                tg.push_text(user, f"Question {turn} from {user}")
                # The next message only after this answer is complete, as a person would.
                await tg.wait_for(lambda n=turn + 1: len(final_texts(tg, user)) >= n, timeout=WAIT)

        await asyncio.gather(*(converse(user) for user in users))
        await bot.wait_idle(timeout=WAIT)
        shown = {user: final_texts(tg, user) for user in users}
        stored = {user: await bot.stored(user, user) for user in users}

    expected_text = f"{scripted.reasoning}\n{scripted.answer}"
    for user in users:
        assert shown[user] == [expected_text] * NUM_MESSAGES, user  # one answer each, no refusal
        assert [(m.role, m.content, m.status) for m in stored[user]] == [
            row
            for turn in range(NUM_MESSAGES)
            for row in (
                ("user", f"Question {turn} from {user}", "complete"),
                ("assistant", scripted.answer, "complete"),
            )
        ], user
