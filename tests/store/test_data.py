"""Data protection: owner-only files, deleting one user's data, an online backup."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store.maintenance import backup_database
from bot.store.records import DeletedData, StoreError
from bot.store.sqlite import SqliteStore
from bot.types import ChatKey

ALICE_GROUP = ChatKey("telegram", "-100", "alice")
ALICE_PRIVATE = ChatKey("telegram", "alice", "alice")
ALICE_DISCORD = ChatKey("discord", "guild", "alice")
BOB = ChatKey("telegram", "-100", "bob")
SECRET = "alice-secret-passphrase-7f3a"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Files are created as if by a process with umask 000 (everything world-writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- owner-only files --------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bot.db"
    async with SqliteStore.open(path) as store:
        await store.add_user_message(ALICE_GROUP, "hello")
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()
        assert {p.name: _mode(p) for p in (path, wal, shm)} == {
            "bot.db": 0o600,
            "bot.db-wal": 0o600,
            "bot.db-shm": 0o600,
        }
    assert _mode(path.parent) == 0o700  # the folder the bot created for it


async def test_a_strict_umask_still_gives_a_writable_database(tmp_path: Path) -> None:
    old = os.umask(0o277)  # would make the file read-only for its owner
    try:
        async with SqliteStore.open(tmp_path / "bot.db") as store:
            await store.add_user_message(ALICE_GROUP, "hello")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "bot.db") == 0o600


# -- deleting one user's data ------------------------------------------------------------------


async def _fill(store: SqliteStore) -> None:
    for key in (ALICE_GROUP, ALICE_PRIVATE, ALICE_DISCORD, BOB):
        await store.add_user_message(key, f"{key}: {SECRET if key.user_id == 'alice' else 'hi'}")
        await store.add_assistant_message(key, answer=f"to {key}")
    await store.reset(ALICE_GROUP)  # a closed dialogue is Alice's data too
    await store.add_user_message(ALICE_GROUP, "after the reset")
    await store.set_system_prompt("telegram", "-100", "Group rules")


async def test_deleting_a_users_data_on_one_platform(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        await _fill(store)
        expected = DeletedData(num_messages=5, num_conversations=3)
        assert await store.count_user_data("alice", platform="telegram") == expected
        assert await store.delete_user_data("alice", platform="telegram") == expected
        assert await store.delete_user_data("alice", platform="telegram") == DeletedData(0, 0)
        left = await store.query_messages()
        assert {m.key for m in left} == {ALICE_DISCORD, BOB}
        assert len(left) == 4
        # The chat's settings belong to the chat, not to one member.
        assert await store.get_system_prompt("telegram", "-100") == "Group rules"
        # Alice can start over.
        again = await store.add_user_message(ALICE_GROUP, "hello again")
        assert await store.history(ALICE_GROUP) == [again]


async def test_deleting_a_users_data_in_one_chat_or_everywhere(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "bot.db") as store:
        await _fill(store)
        assert await store.delete_user_data("alice", chat_id="alice") == DeletedData(2, 1)
        assert await store.delete_user_data("alice") == DeletedData(5, 3)
        assert await store.count_user_data("alice") == DeletedData(0, 0)
        assert {m.key for m in await store.query_messages()} == {BOB}
        assert await store.delete_user_data("nobody") == DeletedData(0, 0)


async def test_deleted_text_is_gone_from_the_files_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore.open(path) as store:
        await _fill(store)
        assert SECRET.encode() in path.read_bytes() + Path(f"{path}-wal").read_bytes()
        assert await store.delete_user_data("alice") == DeletedData(7, 4)
        # While the database is still open (the bot runs): not in the file, not in its WAL.
        for file in (path, Path(f"{path}-wal")):
            assert SECRET.encode() not in file.read_bytes(), file.name


# -- online backup ----------------------------------------------------------------------------


async def test_a_backup_taken_while_another_connection_writes_is_consistent(
    tmp_path: Path,
) -> None:
    path, copy = tmp_path / "bot.db", tmp_path / "backups" / "copy.db"
    keys = [ChatKey("telegram", str(n % 7), str(n)) for n in range(50)]
    async with SqliteStore.open(path) as store:
        for n, key in enumerate(keys):
            await store.add_user_message(key, f"question {n} " + "x" * 2000)
            await store.add_assistant_message(key, answer=f"answer {n} " + "y" * 2000)
        reply_id = await store.begin_reply(keys[0])
        await store.checkpoint_reply(reply_id, "half an answer", "")
        committed = len(await store.query_messages())
        is_backing_up = True
        num_written_during = 0

        async def keep_writing() -> None:
            nonlocal num_written_during
            n = 0
            while is_backing_up or n < 3:
                await store.add_user_message(keys[n % 50], f"more {n}")
                await store.checkpoint_reply(reply_id, f"half an answer, {n}", "")
                num_written_during += is_backing_up
                n += 1

        writer = asyncio.create_task(keep_writing())
        await asyncio.sleep(0)
        try:
            backup = await backup_database(path, copy)
        finally:
            is_backing_up = False
            await writer
        total = len(await store.query_messages())

    assert backup.path == copy and backup.num_bytes == copy.stat().st_size
    assert _mode(copy) == 0o600
    assert _raw(copy, "PRAGMA integrity_check") == [("ok",)]
    assert _raw(copy, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file
    ids = [row[0] for row in _raw(copy, "SELECT id FROM messages ORDER BY id")]
    # Every message committed before the backup, and no torn state: a prefix of the writes.
    assert len(ids) == backup.num_messages >= committed
    assert ids == list(range(1, len(ids) + 1))
    assert total > committed  # the other connection went on writing
    orphans = (
        "SELECT count(*) FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)"
    )
    assert _raw(copy, orphans) == [(0,)]
    async with SqliteStore.open(copy) as restored:
        [streaming] = [m for m in await restored.query_messages() if m.id == reply_id]
        assert streaming.status == "streaming" and streaming.content.startswith("half an answer")
        assert (await restored.history(keys[1]))[0].content.startswith("question 1 ")
    assert not list(copy.parent.glob("*.partial*"))


@pytest.mark.usefixtures("permissive_umask")
async def test_a_backup_is_owner_only_and_never_replaces_a_file_unless_told(
    tmp_path: Path,
) -> None:
    path, copy = tmp_path / "bot.db", tmp_path / "copy.db"
    async with SqliteStore.open(path) as store:
        await store.add_user_message(BOB, "first")
    await backup_database(path, copy)
    assert _mode(copy) == 0o600

    async with SqliteStore.open(path) as store:
        await store.add_user_message(BOB, "second")
    with pytest.raises(StoreError, match=r"copy\.db already exists"):
        await backup_database(path, copy)
    assert _raw(copy, "SELECT content FROM messages") == [("first",)]  # untouched

    replaced = await backup_database(path, copy, overwrite=True)
    assert replaced.num_messages == 2 and _mode(copy) == 0o600
    assert _raw(copy, "SELECT content FROM messages ORDER BY id") == [("first",), ("second",)]
    with pytest.raises(StoreError, match="itself"):
        await backup_database(path, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.db", "copy.db"]


async def test_a_backup_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no database at .*missing\.db"):
        await backup_database(tmp_path / "missing.db", tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == []
