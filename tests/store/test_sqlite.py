"""SqliteStore against real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiosqlite
import pytest

from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, split_statements
from bot.store.sqlite import MessageRecord, SqliteStore, StoreError
from bot.types import ChatKey, ReplyStatus

ALICE = ChatKey("telegram", "-100", "alice")
BOB = ChatKey("telegram", "-100", "bob")


def _raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the file with the plain sqlite3 module, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_messages_survive_reopen_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        asked = await store.add_user_message(ALICE, "你好，世界 👋🏽 — what's 2+2?")
        answered = await store.add_assistant_message(
            ALICE,
            answer="四 (4) 🎉",
            reasoning="用户问 2+2。\n<思考> 🤔",
            status=ReplyStatus.LENGTH,
            num_prompt_tokens=17,
            num_generated_tokens=4096,
            first_token_seconds=0.25,
            total_seconds=61.5,
        )
    async with SqliteStore.open(path) as store:
        history = await store.history(ALICE)
    assert history == [asked, answered]
    assert asked.role == "user" and asked.status == ReplyStatus.COMPLETE
    assert asked.total_seconds is None and asked.finished_at is None
    assert answered.role == "assistant" and answered.status == "length"
    assert (answered.content, answered.reasoning) == ("四 (4) 🎉", "用户问 2+2。\n<思考> 🤔")
    assert (answered.num_prompt_tokens, answered.num_generated_tokens) == (17, 4096)
    assert (answered.first_token_seconds, answered.total_seconds) == (0.25, 61.5)
    assert asked.conversation_id == answered.conversation_id
    assert asked.id < answered.id
    assert answered.finished_at is not None


async def test_timestamps_are_utc_iso8601(tmp_path: Path) -> None:
    local = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    async with SqliteStore.open(tmp_path / "bot.db", clock=lambda: local) as store:
        record = await store.add_user_message(ALICE, "hi")
        [stored] = await store.history(ALICE)
    assert record.created_at == stored.created_at == "2026-03-01T01:30:15.123+00:00"
    assert datetime.fromisoformat(stored.created_at) == local.replace(microsecond=123000)


async def test_await_open_creates_parent_folders_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    store = await SqliteStore.open(path)
    await store.add_user_message(ALICE, "hello")
    await store.close()
    await store.close()
    assert path.is_file()
    with pytest.raises(StoreError, match="closed"):
        await store.history(ALICE)


async def test_close_leaves_everything_on_disk_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        await asyncio.gather(*(store.add_user_message(ALICE, f"m{i}") for i in range(20)))
    assert _raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert _raw(path, "SELECT count(*) FROM messages") == [(20,)]
    assert _raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_reset_keeps_the_old_dialogue_and_starts_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        first = await store.add_user_message(ALICE, "first dialogue")
        await store.add_assistant_message(ALICE, answer="reply one")
        assert await store.current_conversation_id(ALICE) == first.conversation_id

        assert await store.reset(ALICE) is True
        assert await store.history(ALICE) == []
        assert await store.current_conversation_id(ALICE) is None
        assert await store.reset(ALICE) is False  # nothing current to close

        second = await store.add_user_message(ALICE, "second dialogue")
        assert second.conversation_id != first.conversation_id
        assert [m.content for m in await store.history(ALICE)] == ["second dialogue"]

        everything = await store.query_messages()
    assert [(m.conversation_id, m.content) for m in everything] == [
        (first.conversation_id, "first dialogue"),
        (first.conversation_id, "reply one"),
        (second.conversation_id, "second dialogue"),
    ]
    closed = _raw(path, "SELECT id, closed_at FROM conversations ORDER BY id")
    assert closed[0][0] == first.conversation_id and closed[0][1] is not None
    assert closed[1] == (second.conversation_id, None)


async def test_a_reply_finished_after_reset_stays_with_its_question(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        question = await store.add_user_message(ALICE, "a long question")
        await store.reset(ALICE)  # the user resets while the answer is being written
        reply = await store.add_assistant_message(
            ALICE, answer="partial", status=ReplyStatus.STOPPED
        )
        assert reply.conversation_id == question.conversation_id
        assert await store.history(ALICE) == []  # the new dialogue starts clean
        new = await store.add_user_message(ALICE, "new topic")
        later = await store.add_assistant_message(ALICE, answer="new answer")
        assert later.conversation_id == new.conversation_id != question.conversation_id


async def test_reply_by_conversation_id(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        question = await store.add_user_message(BOB, "hi")
        reply = await store.add_assistant_message(
            question.conversation_id, answer="", status=ReplyStatus.FAILED
        )
        assert reply.key == BOB
        assert await store.history(BOB) == [question, reply]
        with pytest.raises(StoreError, match="no conversation 999"):
            await store.add_assistant_message(999, answer="lost")
        with pytest.raises(ValueError):
            await store.add_assistant_message(BOB, answer="x", status="exploded")
        assert len(await store.query_messages()) == 2  # nothing half-written


async def test_group_members_have_separate_dialogues(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        await store.add_user_message(ALICE, "alice 1")
        await store.add_user_message(BOB, "bob 1")
        await store.add_assistant_message(ALICE, answer="to alice")
        await store.add_assistant_message(BOB, answer="to bob")
        await store.reset(BOB)

        assert [m.content for m in await store.history(ALICE)] == ["alice 1", "to alice"]
        assert await store.history(BOB) == []
        assert {m.key for m in await store.query_messages(user_id="bob")} == {BOB}


async def test_reset_chat_resets_everyone_in_that_chat_only(tmp_path: Path) -> None:
    other_chat = ChatKey("telegram", "-200", "alice")
    other_platform = ChatKey("discord", "-100", "alice")
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        for key in (ALICE, BOB, other_chat, other_platform):
            await store.add_user_message(key, f"hello from {key}")
        assert await store.reset_chat("telegram", "-100") == 2
        assert await store.reset_chat("telegram", "-100") == 0
        assert await store.history(ALICE) == []
        assert await store.history(BOB) == []
        assert len(await store.history(other_chat)) == 1
        assert len(await store.history(other_platform)) == 1
        assert len(await store.query_messages(platform="telegram", chat_id="-100")) == 2


async def test_query_messages_filters(tmp_path: Path) -> None:
    keys = [ChatKey(p, c, u) for p in ("telegram", "discord") for c in ("1", "2") for u in "xy"]
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        for key in keys:
            await store.add_user_message(key, str(key))
        assert len(await store.query_messages()) == 8
        assert len(await store.query_messages(platform="discord")) == 4
        assert len(await store.query_messages(chat_id="2", user_id="y")) == 2
        found = await store.query_messages(platform="telegram", chat_id="1", user_id="x")
    assert [m.content for m in found] == ["telegram:1:x"]
    assert found[0].as_json()["platform"] == "telegram"
    assert found[0].as_json()["conversation_id"] == found[0].conversation_id


async def test_system_prompt_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        assert await store.get_system_prompt("telegram", "-100") is None
        await store.set_system_prompt("telegram", "-100", "Answer like a pirate.")
        await store.set_system_prompt("telegram", "-100", "用中文回答。🐉")  # replaces
        await store.set_system_prompt("discord", "-100", "Be brief.")
    async with SqliteStore.open(path) as store:
        assert await store.get_system_prompt("telegram", "-100") == "用中文回答。🐉"
        assert await store.get_system_prompt("discord", "-100") == "Be brief."
        await store.set_system_prompt("telegram", "-100", None)
    async with SqliteStore.open(path) as store:
        assert await store.get_system_prompt("telegram", "-100") is None
        assert await store.get_system_prompt("discord", "-100") == "Be brief."
        await store.set_chat_setting("discord", "-100", "other", "1")
        await store.delete_chat_setting("discord", "-100", "other")
        assert await store.get_chat_setting("discord", "-100", "other") is None


def _write_version_1_database(path: Path) -> None:
    """A database as the first release left it: migration 1 only, with a dialogue in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO conversations (id, platform, chat_id, user_id, created_at, closed_at)"
            " VALUES (1, 'telegram', '-100', 'alice', '2025-01-01T00:00:00.000+00:00',"
            " '2025-01-02T00:00:00.000+00:00'),"
            " (2, 'telegram', '-100', 'alice', '2025-01-03T00:00:00.000+00:00', NULL)"
        )
        conn.execute(
            "INSERT INTO messages (conversation_id, role, content, reasoning, status, created_at)"
            " VALUES (1, 'user', 'old question', '', 'complete', '2025-01-01T00:00:01.000+00:00'),"
            " (2, 'user', '旧的问题 🐢', '', 'complete', '2025-01-03T00:00:01.000+00:00'),"
            " (2, 'assistant', 'old answer', 'old thoughts', 'stopped',"
            " '2025-01-03T00:00:09.000+00:00')"
        )
    finally:
        conn.close()


async def test_a_version_1_database_is_upgraded_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_version_1_database(path)
    assert "num_prompt_tokens" not in {row[1] for row in _raw(path, "PRAGMA table_info(messages)")}

    async with SqliteStore.open(path) as store:
        old = await store.history(ALICE)
        assert [(m.role, m.content, m.status) for m in old] == [
            ("user", "旧的问题 🐢", "complete"),
            ("assistant", "old answer", "stopped"),
        ]
        assert old[1].reasoning == "old thoughts"
        assert (old[1].num_generated_tokens, old[1].total_seconds, old[1].finished_at) == (
            0,
            None,
            None,
        )
        assert len(await store.query_messages()) == 3  # the closed dialogue too

        new = await store.add_assistant_message(
            ALICE,
            answer="new answer",
            num_generated_tokens=12,
            first_token_seconds=0.5,
            total_seconds=2.0,
        )
        assert new.conversation_id == 2
        await store.set_system_prompt("telegram", "-100", "Be kind.")

    assert _raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    async with SqliteStore.open(path) as store:
        assert (await store.history(ALICE))[-1] == new
        assert await store.get_system_prompt("telegram", "-100") == "Be kind."


async def test_a_database_from_a_newer_bot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SqliteStore.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=r"future\.db.*newer"):
        await SqliteStore.open(path)


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER);\nINSERT INTO missing VALUES (1);\n")
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await migrate(conn, MIGRATIONS[:1]) == 1
        with pytest.raises(sqlite3.OperationalError, match="missing"):
            await migrate(conn, broken)
    assert _raw(path, "PRAGMA user_version") == [(1,)]
    tables = {row[0] for row in _raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"conversations", "messages"}  # neither migration 2 nor 'extra'


def test_split_statements_keeps_semicolons_inside_strings() -> None:
    script = "-- note; not a statement\nCREATE TABLE t (x TEXT DEFAULT 'a;b');\nSELECT 1;\n"
    assert split_statements(script) == [
        "-- note; not a statement\nCREATE TABLE t (x TEXT DEFAULT 'a;b');",
        "SELECT 1;",
    ]
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("SELECT 1")


async def test_many_tasks_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    users = [ChatKey("discord", "guild", f"u{i}") for i in range(10)]

    async def turn(key: ChatKey, n: int) -> None:
        question = await store.add_user_message(key, f"{key.user_id} q{n}")
        await store.add_assistant_message(
            question.conversation_id, answer=f"{key.user_id} a{n}", num_generated_tokens=n
        )

    async with SqliteStore.open(path) as store:
        # Every user's first message races to create that user's dialogue.
        await asyncio.gather(*(turn(key, n) for n in range(5) for key in users))
        await asyncio.gather(*(store.reset(key) for key in users[:5]))
        for key in users:
            await store.add_user_message(key, "after")

    async with SqliteStore.open(path) as store:
        for key in users:
            history = await store.history(key)
            assert [m.content for m in history][-1] == "after"
            assert len(history) == (1 if key in users[:5] else 11)
            assert len({m.conversation_id for m in history}) == 1
        assert len(await store.query_messages()) == 10 * 5 * 2 + 10
    assert _raw(path, "SELECT count(*) FROM conversations") == [(15,)]


async def test_cancelled_writes_are_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        tasks = [
            asyncio.create_task(store.add_user_message(ChatKey("t", "c", f"u{i}"), f"m{i}"))
            for i in range(40)
        ]
        # Cancel at different points: before the lock, inside the transaction, after it.
        for i, task in enumerate(tasks):
            for _ in range(i % 7):
                await asyncio.sleep(0)
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        written = [r for r in results if isinstance(r, MessageRecord)]
        cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
        assert len(written) + len(cancelled) == len(tasks)
        # The store is still usable: no transaction was left open.
        await store.add_user_message(ALICE, "still works")
    # Every dialogue has its message: none was created without it.
    orphans = _raw(
        path,
        "SELECT count(*) FROM conversations c"
        " WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)",
    )
    assert orphans == [(0,)]
    stored = _raw(path, "SELECT count(*) FROM messages")[0][0]
    assert len(written) + 1 <= stored <= 41


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)
    with pytest.raises(StoreError, match=r"notes\.db.*not a database"):
        async with SqliteStore.open(path):
            pass
    assert path.read_bytes().startswith(b"these are not")


async def test_unopenable_paths_are_clear_errors(tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(StoreError, match=r"folder\.db"):
        await SqliteStore.open(folder)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"file/sub/bot\.db"):
        await SqliteStore.open(blocker / "sub" / "bot.db")
