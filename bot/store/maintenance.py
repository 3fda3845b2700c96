"""Data operations for the operator: delete one user's data; copy the database while it is used."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from bot.store.connection import OWNER_ONLY, make_folder
from bot.store.records import DeletedData, StoreError

# The user's dialogues, optionally only on one platform and/or in one chat (NULL: any).
_USER_CONVERSATIONS = (
    "SELECT id FROM conversations WHERE user_id = ?1"
    " AND (?2 IS NULL OR platform = ?2) AND (?3 IS NULL OR chat_id = ?3)"
)
_COUNT_USER_DATA = (
    "SELECT (SELECT count(*) FROM messages WHERE conversation_id IN ("
    + _USER_CONVERSATIONS
    + ")), (SELECT count(*) FROM ("
    + _USER_CONVERSATIONS
    + "))"
)
_DELETE_USER_MESSAGES = (
    "DELETE FROM messages WHERE conversation_id IN (" + _USER_CONVERSATIONS + ")"
)
_DELETE_USER_CONVERSATIONS = "DELETE FROM conversations WHERE id IN (" + _USER_CONVERSATIONS + ")"
# Old page images of deleted rows may still sit in the WAL file: write them back and empty it.
_TRUNCATE_WAL = "PRAGMA wal_checkpoint(TRUNCATE)"

_COUNT_MESSAGES = "SELECT count(*) FROM messages"


async def count_user_data(
    conn: aiosqlite.Connection, user_id: str, platform: str | None, chat_id: str | None
) -> DeletedData:
    """What delete_user_data would remove now."""
    rows = list(await conn.execute_fetchall(_COUNT_USER_DATA, (user_id, platform, chat_id)))
    return DeletedData(num_messages=rows[0][0], num_conversations=rows[0][1])


async def delete_user_data(
    conn: aiosqlite.Connection, user_id: str, platform: str | None, chat_id: str | None
) -> DeletedData:
    """Delete a user's dialogues and their messages (inside the caller's transaction)."""
    params = (user_id, platform, chat_id)
    async with conn.execute(_DELETE_USER_MESSAGES, params) as cursor:
        num_messages = cursor.rowcount
    async with conn.execute(_DELETE_USER_CONVERSATIONS, params) as cursor:
        num_conversations = cursor.rowcount
    return DeletedData(num_messages=num_messages, num_conversations=num_conversations)


async def truncate_wal(conn: aiosqlite.Connection) -> bool:
    """Checkpoint and empty the WAL (outside a transaction); False if a reader kept it busy."""
    rows = list(await conn.execute_fetchall(_TRUNCATE_WAL))
    return rows[0][0] == 0


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where, how many messages it holds, and its size."""

    path: Path
    num_messages: int
    num_bytes: int


async def backup_database(source: Path, target: Path, *, overwrite: bool = False) -> Backup:
    """Copy the database at `source` to a new owner-only file `target`, while it is in use.

    SQLite's online backup copies every page in one step under one read transaction: the
    copy is the database as of one commit, and in WAL mode the bot keeps writing meanwhile.
    The copy is written next to `target` and renamed into place only when complete and
    checked; it is a single file (journal mode DELETE). An existing `target` is an error
    unless `overwrite`. The schema is copied as it is (no migration).
    """
    if not source.is_file():
        raise StoreError(f"no database at {source}")
    if target.exists() and not overwrite:
        raise StoreError(f"the backup file {target} already exists")
    if target.exists() and target.samefile(source):
        raise StoreError(f"the backup would replace the database {source} itself")
    try:
        make_folder(target)
        # mkstemp creates the file 0600 whatever the umask.
        fd, partial_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
    except OSError as exc:
        raise StoreError(f"cannot write the backup file {target}: {exc}") from exc
    os.close(fd)
    partial = Path(partial_name)
    try:
        num_messages = await _copy(source, partial)
        await asyncio.to_thread(_publish, partial, target, overwrite)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up the database {source}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot write the backup file {target}: {exc}") from exc
    finally:
        for leftover in (partial, *_sidecars(partial)):
            leftover.unlink(missing_ok=True)
    return Backup(target, num_messages, target.stat().st_size)


async def _copy(source: Path, partial: Path) -> int:
    """Back `source` up into the empty file `partial`; returns the number of messages copied."""
    # mode=rw: a missing file is not created. Only reads are made; unlike a read-only
    # connection, closing this one removes the -wal/-shm files it opened (bot not running).
    uri = f"file:{quote(str(source.resolve()))}?mode=rw"
    async with aiosqlite.connect(uri, uri=True) as src:
        await src.execute("PRAGMA busy_timeout = 5000")
        # The copy is used on src's thread, so it may not insist on its own.
        async with aiosqlite.connect(partial, check_same_thread=False) as dst:
            await src.backup(dst, pages=0)  # 0: all pages in one step, one snapshot
            rows = list(await dst.execute_fetchall("PRAGMA journal_mode = DELETE"))
            if rows[0][0] != "delete":
                raise StoreError(f"the backup in {partial} could not leave WAL mode")
            rows = list(await dst.execute_fetchall("PRAGMA quick_check"))
            if [row[0] for row in rows] != ["ok"]:
                raise StoreError(f"the backup of {source} is damaged: {rows[0][0]}")
            rows = list(await dst.execute_fetchall(_COUNT_MESSAGES))
            return int(rows[0][0])


def _publish(partial: Path, target: Path, overwrite: bool) -> None:
    """Sync the finished copy and give it its name (atomically; never over a file unless told)."""
    with partial.open("rb+") as file:
        os.fsync(file.fileno())
    os.chmod(partial, OWNER_ONLY)
    if overwrite:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)  # fails if target exists: no window to clobber it
        except FileExistsError:
            raise StoreError(f"the backup file {target} already exists") from None
    with contextlib.suppress(OSError):  # not every platform can sync a folder
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm")]
