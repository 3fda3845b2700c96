"""Replies stored while they stream: checkpoints, finishing, and recovery after a kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION
from bot.store.sqlite import SqliteStore
from bot.types import ChatKey, ReplyStatus
from tests.support.configs import REPO, bot_env

ALICE = ChatKey("telegram", "-100", "alice")
BOB = ChatKey("discord", "42", "bob")


def _raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_a_reply_streams_into_one_row_and_finishes_there(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        question = await store.add_user_message(ALICE, "Why is the sky blue?")
        reply_id = await store.begin_reply(ALICE)
        [row] = [m for m in await store.query_messages() if m.id == reply_id]
        assert (row.role, row.content, row.status, row.finished_at) == (
            "assistant",
            "",
            "streaming",
            None,
        )
        await store.checkpoint_reply(reply_id, "Rayleigh 散射", "The user asks… 🤔")
        assert _raw(
            path, "SELECT content, reasoning, status FROM messages WHERE id = ?", (reply_id,)
        ) == [("Rayleigh 散射", "The user asks… 🤔", "streaming")]
        # While it streams it is not part of the dialogue a new prompt is built from.
        assert await store.history(ALICE) == [question]

        finished = await store.finish_reply(
            reply_id,
            answer="Rayleigh 散射: blue light scatters more.",
            reasoning="The user asks… 🤔 physics.",
            status=ReplyStatus.COMPLETE,
            num_prompt_tokens=12,
            num_generated_tokens=80,
            first_token_seconds=0.4,
            total_seconds=3.5,
        )
        assert finished is not None and finished.id == reply_id
        assert await store.history(ALICE) == [question, finished]
    assert finished.status == "complete" and finished.conversation_id == question.conversation_id
    assert finished.content == "Rayleigh 散射: blue light scatters more."
    assert (finished.num_prompt_tokens, finished.num_generated_tokens) == (12, 80)
    assert (finished.first_token_seconds, finished.total_seconds) == (0.4, 3.5)
    assert finished.finished_at is not None and finished.created_at <= finished.finished_at
    assert _raw(path, "SELECT count(*) FROM messages") == [(2,)]  # one row, not two


async def test_a_checkpoint_after_the_end_changes_nothing(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        await store.add_user_message(ALICE, "hi")
        reply_id = await store.begin_reply(ALICE)
        await store.finish_reply(reply_id, answer="Hello!", status=ReplyStatus.STOPPED)
        await store.checkpoint_reply(reply_id, "Hel", "")  # a checkpoint that arrives late
        [_, reply] = await store.history(ALICE)
    assert (reply.content, reply.status) == ("Hello!", "stopped")


async def test_many_replies_checkpoint_at_once_and_each_keeps_its_latest_text(
    tmp_path: Path,
) -> None:
    keys = [ChatKey("telegram", str(i), str(i)) for i in range(40)]
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        for key in keys:
            await store.add_user_message(key, "go")
        reply_ids = [await store.begin_reply(key) for key in keys]

        async def stream(n: int, reply_id: int) -> None:
            for step in range(5):
                await store.checkpoint_reply(reply_id, f"answer {n} step {step}", f"r{n}")
            if n % 2:  # half of them end while the others still checkpoint
                await store.finish_reply(reply_id, answer=f"answer {n} done")

        await asyncio.gather(*(stream(n, rid) for n, rid in enumerate(reply_ids)))
        rows = {m.id: m for m in await store.query_messages() if m.role == "assistant"}
    for n, reply_id in enumerate(reply_ids):
        expected = f"answer {n} done" if n % 2 else f"answer {n} step 4"
        assert rows[reply_id].content == expected
        assert rows[reply_id].status == ("complete" if n % 2 else "streaming")
        assert rows[reply_id].reasoning == ("" if n % 2 else f"r{n}")


async def test_recovery_marks_streaming_replies_interrupted_and_keeps_their_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    location = json.dumps({"chat_id": -100, "message_ids": [7, 8]})
    async with SqliteStore.open(path) as store:
        await store.add_user_message(ALICE, "Tell me a long story")
        alice_reply = await store.begin_reply(ALICE)
        await store.checkpoint_reply(alice_reply, "Once upon a time", "a story, then")
        assert await store.set_reply_location(alice_reply, location) is True
        await store.add_user_message(BOB, "and me?")
        bob_reply = await store.begin_reply(BOB)  # killed before its first checkpoint
        await store.add_user_message(ChatKey("telegram", "1", "carol"), "done")
        await store.add_assistant_message(ChatKey("telegram", "1", "carol"), answer="finished")
    # The bot was killed here: nothing finished the two replies.

    async with SqliteStore.open(path) as store:
        recovered = await store.recover_interrupted()
        assert await store.recover_interrupted() == []  # once only
        alice_history = await store.history(ALICE)
        bob_history = await store.history(BOB)
    assert [(r.key, r.reply_id, r.answer, r.reasoning, r.location) for r in recovered] == [
        (ALICE, alice_reply, "Once upon a time", "a story, then", location),
        (BOB, bob_reply, "", "", None),
    ]
    # The dialogue continues from what the user saw.
    assert [(m.role, m.content, m.status) for m in alice_history] == [
        ("user", "Tell me a long story", "complete"),
        ("assistant", "Once upon a time", "interrupted"),
    ]
    assert alice_history[1].finished_at is not None
    assert alice_history[1].location == location
    assert [m.status for m in bob_history] == ["complete", "interrupted"]
    statuses = _raw(path, "SELECT status, count(*) FROM messages GROUP BY status ORDER BY 1")
    assert statuses == [("complete", 4), ("interrupted", 2)]


async def test_opening_the_database_elsewhere_does_not_cut_a_running_answer(
    tmp_path: Path,
) -> None:
    """`history` or `backup` open the file while the bot runs: only the bot itself recovers."""
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as bot:
        await bot.add_user_message(ALICE, "q")
        reply_id = await bot.begin_reply(ALICE)
        async with SqliteStore.open(path) as other:
            [_, reply] = await other.query_messages()
            assert reply.status == "streaming"
        await bot.checkpoint_reply(reply_id, "still going", "")
        assert await bot.finish_reply(reply_id, answer="still going, done") is not None
        assert [m.content for m in await bot.history(ALICE)] == ["q", "still going, done"]


async def test_a_reply_begun_before_a_reset_stays_with_its_question(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        question = await store.add_user_message(ALICE, "old topic")
        reply_id = await store.begin_reply(ALICE)
        await store.reset(ALICE)
        new = await store.add_user_message(ALICE, "new topic")
        reply = await store.finish_reply(reply_id, answer="old answer")
        assert reply is not None and reply.conversation_id == question.conversation_id
        assert await store.history(ALICE) == [new]


async def test_finishing_a_reply_whose_user_data_was_deleted_stores_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        await store.add_user_message(ALICE, "forget me")
        reply_id = await store.begin_reply(ALICE)
        await store.delete_user_data("alice")
        await store.checkpoint_reply(reply_id, "partial", "")
        assert await store.finish_reply(reply_id, answer="the whole answer") is None
        assert await store.set_reply_location(reply_id, "{}") is False
        assert await store.recover_interrupted() == []
    assert _raw(path, "SELECT count(*) FROM messages") == [(0,)]
    assert _raw(path, "SELECT count(*) FROM conversations") == [(0,)]


async def test_a_reply_cannot_end_as_streaming_or_unknown(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        await store.add_user_message(ALICE, "q")
        reply_id = await store.begin_reply(ALICE)
        with pytest.raises(ValueError, match="streaming"):
            await store.finish_reply(reply_id, answer="x", status=ReplyStatus.STREAMING)
        with pytest.raises(ValueError):
            await store.finish_reply(reply_id, answer="x", status="exploded")
        with pytest.raises(ValueError):
            await store.add_assistant_message(ALICE, answer="x", status="streaming")
        [_, reply] = await store.query_messages()
    assert (reply.status, reply.content) == ("streaming", "")


_KILLED_BOT = textwrap.dedent(
    """
    import asyncio, sys
    from bot.store.sqlite import SqliteStore
    from bot.types import ChatKey

    async def main():
        store = await SqliteStore.open(sys.argv[1])
        key = ChatKey("telegram", "-100", "alice")
        await store.add_user_message(key, "Explain WAL mode")
        reply_id = await store.begin_reply(key)
        await store.checkpoint_reply(reply_id, "WAL appends", "think")
        await store.checkpoint_reply(reply_id, "WAL appends changes to a log", "think more")
        print(reply_id, flush=True)
        await asyncio.sleep(3600)  # streaming on, until killed

    asyncio.run(main())
    """
)


async def test_a_checkpoint_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BOT, str(path)],
        cwd=REPO,
        env=bot_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        reply_id = int(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    async with SqliteStore.open(path) as store:
        [recovered] = await store.recover_interrupted()
        history = await store.history(recovered.key)
    assert (recovered.reply_id, recovered.answer) == (reply_id, "WAL appends changes to a log")
    assert [(m.content, m.status) for m in history] == [
        ("Explain WAL mode", "complete"),
        ("WAL appends changes to a log", "interrupted"),
    ]


def _write_version_2_database(path: Path) -> None:
    """A database as the release before replies streamed into the store left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO conversations (id, platform, chat_id, user_id, created_at)"
            " VALUES (1, 'telegram', '-100', 'alice', '2025-06-01T00:00:00.000+00:00')"
        )
        conn.execute(
            "INSERT INTO messages (conversation_id, role, content, reasoning, status,"
            " num_prompt_tokens, num_generated_tokens, first_token_seconds, total_seconds,"
            " created_at, finished_at) VALUES"
            " (1, 'user', 'v2 question ✨', '', 'complete', 0, 0, NULL, NULL,"
            " '2025-06-01T00:00:01.000+00:00', NULL),"
            " (1, 'assistant', 'v2 answer', 'v2 thoughts', 'interrupted', 9, 30, 0.5, 2.0,"
            " '2025-06-01T00:00:02.000+00:00', '2025-06-01T00:00:04.000+00:00')"
        )
        conn.execute(
            "INSERT INTO chat_settings VALUES"
            " ('telegram', '-100', 'system_prompt', 'Be brief.', '2025-06-01T00:00:00.000+00:00')"
        )
    finally:
        conn.close()


async def test_a_version_2_database_is_upgraded_and_takes_streaming_replies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    _write_version_2_database(path)
    async with SqliteStore.open(path) as store:
        assert await store.recover_interrupted() == []
        old = await store.history(ALICE)
        assert [(m.role, m.content, m.status, m.location) for m in old] == [
            ("user", "v2 question ✨", "complete", None),
            ("assistant", "v2 answer", "interrupted", None),
        ]
        assert (old[1].reasoning, old[1].num_generated_tokens, old[1].total_seconds) == (
            "v2 thoughts",
            30,
            2.0,
        )
        assert await store.get_system_prompt("telegram", "-100") == "Be brief."
        await store.add_user_message(ALICE, "a new turn")
        reply_id = await store.begin_reply(ALICE)
        await store.set_reply_location(reply_id, "here")
        await store.checkpoint_reply(reply_id, "new", "")
    assert _raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    async with SqliteStore.open(path) as store:
        [recovered] = await store.recover_interrupted()
        assert (recovered.answer, recovered.location) == ("new", "here")
        assert [m.content for m in await store.history(ALICE)] == [
            "v2 question ✨",
            "v2 answer",
            "a new turn",
            "new",
        ]
