"""What users can do beyond plain questions, end to end on Discord: math, /id, replies, files."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.discord_state import CALLBACK_UPDATE_MESSAGE
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


async def test_id_shows_user_channel_and_server_ids_privately(model, tokenizer, tmp_path) -> None:
    # Only bob may chat: alice needs /id to ask an admin to add her.
    async with running_bot(model, tokenizer, tmp_path, allowed_users=("bob",)) as bot:
        in_guild = await bot.dc.slash(bot.alice, "id", guild=bot.guild)
        in_dm = await bot.dc.slash(bot.alice, "id")
        for record in (in_guild, in_dm):
            await bot.dc.wait_for(lambda r=record: r.original and r.original.content)
    channel = bot.guild.default_channel
    assert in_guild.original.is_ephemeral
    assert in_guild.original.content == (
        f"Your user id: {bot.alice.id}\nThis channel's id: {channel.id}\n"
        f"This server's id: {bot.guild.id}"
    )
    dm = bot.dc.dm_channel(bot.alice)
    assert in_dm.original.content == f"Your user id: {bot.alice.id}\nThis channel's id: {dm.id}"


async def _turns(bot: Any, channel: Any, user: Any) -> list[str]:
    return [m.content for m in await bot.stored(channel.id, user) if m.role == "user"]


async def _answers(bot: Any, channel: Any, count: int) -> list[str]:
    await bot.dc.wait_for(
        lambda: len([m for m in bot.bot_messages(channel) if is_done(m)]) >= count
    )
    await bot.wait_idle()
    return [m.content for m in bot.bot_messages(channel)]


async def test_a_reply_brings_the_replied_to_message_into_the_turn(
    model, tokenizer, tmp_path
) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc, channel = bot.dc, bot.guild.default_channel
        hi = await dc.inject_message(bot.alice, "hi", guild=bot.guild, mention_bot=True)
        [answer] = await _answers(bot, channel, 1)
        # Without the message-content intent Discord hides the text of a server message that
        # is neither the bot's nor mentions it, also as the message replied to.
        said = await dc.inject_message(bot.bob, "The train leaves at five.", guild=bot.guild)
        await dc.inject_message(
            bot.alice, "when?", guild=bot.guild, mention_bot=True, reply_to=said
        )
        await _answers(bot, channel, 2)
        [shown] = [m for m in bot.bot_messages(channel) if m.content == answer][:1]
        await dc.inject_message(
            bot.alice, "why bold?", guild=bot.guild, mention_bot=True, reply_to=shown
        )
        await _answers(bot, channel, 3)
        await dc.inject_message(bot.alice, "again", guild=bot.guild, mention_bot=True, reply_to=hi)
        await _answers(bot, channel, 4)
        turns = await _turns(bot, channel, bot.alice)
    assert answer == "> Let me think.\n" + ANSWER_SHOWN
    assert turns == [
        "hi",
        "when?",
        # The bot's own answer without its quoted reasoning.
        "(Replying to your message:)\n> Half is ½, so\n> **7**\n\nwhy bold?",
        "(Replying to my earlier message:)\n> hi\n\nagain",  # the mention left out
    ]


async def test_text_files_are_read_and_others_refused_in_one_line(
    model, tokenizer, tmp_path
) -> None:
    async with running_bot(model, tokenizer, tmp_path, chat={"max_attachment_bytes": 1024}) as bot:
        dc = bot.dc
        dm = dc.dm_channel(bot.alice)
        await dc.inject_message(
            bot.alice, "Summarize", attachments=[("notes.txt", b"buy milk\n", "text/plain")]
        )
        await _answers(bot, dm, 1)
        refused = [
            ("big.csv", b"a," * 1000, "text/csv"),
            ("data.txt", b"\x89PNG\x00\xff", "text/plain"),
            ("cat.png", b"\x89PNG", "image/png"),
        ]
        for count, file in enumerate(refused, start=2):
            await dc.inject_message(bot.alice, "What is in it?", attachments=[file])
            await dc.wait_for(lambda n=count: len(bot.bot_messages(dm)) >= n)
        texts = [m.content for m in bot.bot_messages(dm)]
        turns = await _turns(bot, dm, bot.alice)
    assert turns == ["File notes.txt:\n```\nbuy milk\n```\n\nSummarize"]
    assert texts[1:] == [
        "big.csv is too large for me (2 KB; I read text files up to 1 KB).",
        "I can't read data.txt: it is not UTF-8 text. Save it as UTF-8 (or paste the text) "
        "and send it again.",
        "I can't read cat.png: I can only read text messages and text files (.txt, .md, "
        ".csv, source code); images, voice and other files I can't read.",
    ]
    assert dc.downloads == ["notes.txt", "data.txt"]  # refused by size or type: not fetched


async def test_slash_chat_reads_an_attached_text_file(model, tokenizer, tmp_path) -> None:
    async with running_bot(model, tokenizer, tmp_path) as bot:
        dc, channel = bot.dc, bot.guild.default_channel
        upload = ("notes.md", b"# Plan\n- ship it\n", "text/markdown")
        rec = await dc.slash(bot.alice, "chat", prompt="Summarize", file=upload, guild=bot.guild)
        await dc.wait_for(lambda: is_done(rec.original))
        await bot.wait_idle()
        # Refused before the public "thinking…" (by type), or after it (content): privately.
        image = await dc.slash(
            bot.alice, "chat", prompt="What?", file=("a.png", b"\x89PNG", "image/png")
        )
        binary = await dc.slash(
            bot.alice, "chat", prompt="What?", file=("a.txt", b"\xff\x00", "text/plain")
        )
        await dc.wait_for(lambda: image.original and image.original.content)
        await dc.wait_for(lambda: binary.followups and binary.followups[0].content)
        turns = await _turns(bot, channel, bot.alice)
    assert turns == ["File notes.md:\n```\n# Plan\n- ship it\n```\n\nSummarize"]
    assert image.original.is_ephemeral and image.original.content.startswith(
        "I can't read a.png: I can only read text messages and text files"
    )
    [refusal] = binary.followups
    assert refusal.is_ephemeral and refusal.content.startswith(
        "I can't read a.txt: it is not UTF-8"
    )
    assert binary.original.is_deleted  # the public placeholder is gone


async def test_regenerate_answers_again_only_for_the_asker(model, tokenizer, tmp_path) -> None:
    chat = {"reasoning": "hidden", "regenerate_button": True}
    async with running_bot(model, tokenizer, tmp_path, chat=chat) as bot:
        dc, channel = bot.dc, bot.guild.default_channel
        regenerate = f"r1bot:regen:{bot.alice.id}"
        rec = await dc.slash(bot.alice, "chat", prompt="What is 7?", guild=bot.guild)
        await dc.wait_for(lambda: rec.original and regenerate in rec.original.custom_ids())
        other = await dc.click(bot.bob, rec.original, regenerate)
        await dc.wait_for(lambda: other.original and other.original.content)
        press = await dc.click(bot.alice, rec.original, regenerate)
        [again] = await dc.wait_for(
            lambda: (
                [m for m in bot.bot_messages(channel) if regenerate in m.custom_ids()]
                if not rec.original.components
                else None
            )
        )
        await bot.wait_idle()
        stored = await bot.stored(channel.id, bot.alice)
    assert other.original.is_ephemeral
    assert other.original.content == "Only the person who asked can regenerate this answer."
    assert press.callback_type == CALLBACK_UPDATE_MESSAGE  # the old answer lost its button
    assert rec.original.content == again.content == ANSWER_SHOWN
    assert again.referenced is rec.original  # the new answer replies to the old one
    assert [(m.role, m.superseded_at is not None) for m in stored] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]


async def test_an_answer_cut_at_the_length_limit_can_be_continued(
    model, tokenizer, tmp_path
) -> None:
    chat = {"reasoning": "hidden", "regenerate_button": True}
    async with running_bot(
        model, tokenizer, tmp_path, chat=chat, generation={"max_new_tokens": 10}
    ) as bot:
        dc, channel = bot.dc, bot.guild.default_channel
        go_on = f"r1bot:cont:{bot.alice.id}"
        rec = await dc.slash(bot.alice, "chat", prompt="What is 7?", guild=bot.guild)
        await dc.wait_for(lambda: rec.original and go_on in rec.original.custom_ids())
        buttons = sorted(rec.original.custom_ids())
        await dc.click(bot.alice, rec.original, go_on)
        [continued] = await dc.wait_for(
            lambda: [m for m in bot.bot_messages(channel) if m.referenced is rec.original]
        )
        await dc.wait_for(lambda: is_done(continued) or continued.custom_ids())
        await bot.wait_idle()
        stored = await bot.stored(channel.id, bot.alice)
    assert buttons == sorted([go_on, f"r1bot:regen:{bot.alice.id}"])
    assert not rec.original.components  # the cut answer lost its buttons
    assert [(m.role, m.content if m.role == "user" else m.status) for m in stored][:3] == [
        ("user", "What is 7?"),
        ("assistant", "length"),
        ("user", "Please continue where you stopped."),
    ]
