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


async def test_id_shows_user_and_chat_ids_also_to_users_not_allowed(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    # Only ALICE may chat: the others need /id to ask an admin to add them.
    async with running_bot(
        scripted.model, tokenizer, tmp_path, telegram={"allowed_users": (ALICE,)}
    ) as bot:
        bot.tg.push_command(USER, "id")
        bot.tg.push_command(GROUP, "id", user_id=ALICE, with_username=True)
        private = await _answered(bot, USER)
        group = await _answered(bot, GROUP)
    assert private == [f"Your user id: {USER}\nThis chat's id: {USER}"]
    assert group == [f"Your user id: {ALICE}\nThis chat's id: {GROUP}"]


async def _stored_turns(bot: Bot, chat_id: int, user_id: int) -> list[str]:
    return [m.content for m in await bot.stored(chat_id, user_id) if m.role == "user"]


async def test_replying_to_the_bot_puts_its_answer_into_the_turn(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    # The answer shows below its collapsed reasoning: only the answer is quoted.
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_text(USER, "What is 7?")
        await _answered(bot, USER)
        answer = bot.tg.chat(USER).last_bot_message
        assert answer is not None
        bot.tg.push_text(USER, "Why bold?", reply_to=answer.message_id)
        await _answered(bot, USER, count=2)
        # Telegram's quote reply: only the selected part goes in.
        bot.tg.push_text(USER, "And this?", reply_to=answer.message_id, quote="½")
        await _answered(bot, USER, count=3)
        turns = await _stored_turns(bot, USER, USER)
    assert turns == [
        "What is 7?",
        "(Replying to your message:)\n> Half is ½, so\n> 7\n\nWhy bold?",
        "(Replying to your message:)\n> ½\n\nAnd this?",
    ]


async def test_in_a_group_a_reply_to_someone_else_is_quoted_and_trimmed(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"reply_context_chars": 20}
    ) as bot:
        bot.tg.add_user(ALICE, first_name="Alice")
        said = bot.tg.push_text(GROUP, "The train leaves at five, from platform 9.", user_id=ALICE)
        bot.tg.push_text(
            GROUP, "when is that?", user_id=USER, reply_to=said["message_id"], mention=True
        )
        await _answered(bot, GROUP)
        bot.tg.push_command(GROUP, "ask", user_id=USER)  # /ask alone, replying to nothing
        await bot.tg.wait_for(lambda: len(bot.tg.chat(GROUP).bot_messages) >= 2)
        turns = await _stored_turns(bot, GROUP, USER)
    assert turns == [
        "(Replying to a message from Alice:)\n> The train leaves at…\n\nwhen is that?",
    ]


async def test_a_text_file_is_read_into_the_turn(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_document(USER, "notes.md", b"# Plan\n- buy ``milk``\r\n", caption="Summarize")
        await _answered(bot, USER)
        bot.tg.push_document(
            USER, "main.py", "print('héllo')\n".encode(), mime_type="text/x-python"
        )
        await _answered(bot, USER, count=2)
        turns = await _stored_turns(bot, USER, USER)
    assert turns == [
        "File notes.md:\n```\n# Plan\n- buy ``milk``\n```\n\nSummarize",
        "File main.py:\n```\nprint('héllo')\n```",
    ]


async def test_in_a_group_a_file_is_read_only_when_meant_for_the_bot(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_document(GROUP, "shared.txt", b"for the team", user_id=ALICE)
        bot.tg.push_document(
            GROUP, "q.txt", b"2 + 2", caption="solve this", user_id=ALICE, mention=True
        )
        await _answered(bot, GROUP)
        turns = await _stored_turns(bot, GROUP, ALICE)
    assert turns == ["File q.txt:\n```\n2 + 2\n```\n\nsolve this"]
    assert bot.tg.downloads == ["documents/file_2.txt"]  # the other file was not fetched
    assert len(bot.tg.chat(GROUP).bot_messages) == 1


REFUSALS = {
    "oversized": (
        {"file_name": "big.txt", "content": b"a" * 2000},
        "big.txt is too large for me (2 KB; I read text files up to 1 KB).",
    ),
    "binary": (
        {"file_name": "data.txt", "content": b"\x89PNG\r\n\x1a\n\x00\x00\xff"},
        "I can't read data.txt: it is not UTF-8 text. Save it as UTF-8 (or paste the text) "
        "and send it again.",
    ),
    "pdf": (
        {"file_name": "report.pdf", "content": b"%PDF-1.7", "mime_type": "application/pdf"},
        "I can't read report.pdf: I can only read text messages and text files (.txt, .md, "
        ".csv, source code); images, voice and other files I can't read.",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_files_it_cannot_read_get_one_clear_line_and_change_nothing(
    scripted: Scripted, tokenizer: Any, tmp_path: Path, case: str
) -> None:
    document, refusal = REFUSALS[case]
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat={"max_attachment_bytes": 1024}
    ) as bot:
        bot.tg.push_document(USER, caption="What is in it?", **document)
        texts = await _answered(bot, USER)
        stored = await bot.stored(USER, USER)
    assert texts == [refusal]
    assert stored == []
    # Files refused by their name or size are never downloaded.
    assert bot.tg.downloads == ([] if case != "binary" else ["documents/file_1.txt"])


async def test_a_photo_gets_the_line_of_what_is_supported(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.push_media(USER, "photo", caption="What is this?")
        texts = await _answered(bot, USER)
    assert texts == [
        "I can only read text messages and text files (.txt, .md, .csv, source code); images, "
        "voice and other files I can't read."
    ]


def _with_button(bot: Bot, chat_id: int, data: str) -> list[int]:
    """Ids of the bot's messages in the chat that show a button with this callback data."""
    return [
        m.message_id
        for m in bot.tg.chat(chat_id).bot_messages
        if any(b.get("callback_data") == data for b in m.buttons)
    ]


async def test_regenerate_answers_again_and_keeps_the_old_answer_stored(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    regenerate = f"regen:{USER}"
    chat = {"reasoning": "hidden", "regenerate_button": True}
    async with running_bot(scripted.model, tokenizer, tmp_path, chat=chat) as bot:
        tg = bot.tg
        question = tg.push_text(USER, "What is 7?")
        [first] = await tg.wait_for(lambda: _with_button(bot, USER, regenerate))
        query = tg.push_callback(USER, first, regenerate)
        [second] = await tg.wait_for(
            lambda: [i for i in _with_button(bot, USER, regenerate) if i != first]
        )
        await bot.wait_idle()
        stored = await bot.stored(USER, USER)
    old, new = tg.message(USER, first), tg.message(USER, second)
    assert (old.text, new.text) == (MATH_SHOWN, MATH_SHOWN)
    assert old.reply_markup is None  # only the latest answer offers 🔄
    assert new.reply_to_message_id == question["message_id"]
    assert tg.callback_queries[query].answer["text"] == "Regenerating…"
    assert [(m.role, m.superseded_at is not None) for m in stored] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]


async def test_in_a_group_only_the_asker_regenerates(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    regenerate = f"regen:{USER}"
    chat = {"reasoning": "hidden", "regenerate_button": True}
    async with running_bot(scripted.model, tokenizer, tmp_path, chat=chat) as bot:
        tg = bot.tg
        tg.push_text(GROUP, "What is 7?", user_id=USER, mention=True)
        [answer] = await tg.wait_for(lambda: _with_button(bot, GROUP, regenerate))
        query = tg.push_callback(GROUP, answer, regenerate, user_id=ALICE)
        await tg.wait_for(lambda: tg.callback_queries[query].is_answered)
        stored = await bot.stored(GROUP, USER)
    assert tg.callback_queries[query].answer["text"] == (
        "Only the person who asked can regenerate this answer."
    )
    assert len(stored) == 2 and len(tg.chat(GROUP).bot_messages) == 1


async def test_an_answer_cut_at_the_length_limit_can_be_continued(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    go_on = f"cont:{USER}"
    chat = {"reasoning": "hidden", "regenerate_button": True}
    generation = {"max_new_tokens": scripted.num_tokens - 3}  # cut just before the end
    async with running_bot(
        scripted.model, tokenizer, tmp_path, chat=chat, generation=generation
    ) as bot:
        tg = bot.tg
        tg.push_text(USER, "What is 7?")
        [cut] = await tg.wait_for(lambda: _with_button(bot, USER, go_on))
        labels = [b["text"] for b in tg.message(USER, cut).buttons]
        query = tg.push_callback(USER, cut, go_on)
        await tg.wait_for(lambda: [i for i in _with_button(bot, USER, f"regen:{USER}") if i != cut])
        await bot.wait_idle()
        stored = await bot.stored(USER, USER)
    assert labels == ["🔄 Regenerate", "➡ Continue"]
    assert tg.callback_queries[query].answer["text"] == "Continuing…"
    assert [(m.role, m.status) for m in stored][:3] == [
        ("user", "complete"),
        ("assistant", "length"),
        ("user", "complete"),
    ]
    assert stored[2].content == "Please continue where you stopped."
    continued = tg.chat(USER).bot_messages[-1]
    assert continued.reply_to_message_id == cut  # the continuation follows the cut answer
    assert tg.message(USER, cut).reply_markup is None
