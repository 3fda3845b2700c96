"""The database connection: its file created owner-only, configured, upgraded; then shared.

Database is the one connection that every task of the bot uses: whole transactions and reads
take turns under one lock (aiosqlite only orders single statements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.migrations import SchemaTooNew, migrate, schema_version
from bot.store.records import StoreError

log = logging.getLogger(__name__)

# Dialogues are private: only the bot's own user may read the database (and its copies).
OWNER_ONLY = stat.S_IRUSR | stat.S_IWUSR  # 0600
OWNER_ONLY_FOLDER = stat.S_IRWXU  # 0700, for folders the bot creates


class Database:
    """One open SQLite connection shared by many asyncio tasks; errors become StoreError."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        # Held for a whole transaction or read: one task's statements never interleave with
        # another's. Callers that decide what to write only once it is their turn hold it
        # themselves and use transaction_held().
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, name: str) -> Database:
        return cls(await connect(name), name)

    @property
    def path(self) -> str:
        return self._path

    @property
    def is_closed(self) -> bool:
        return self._conn is None

    async def close(self) -> None:
        """Wait for running writes, then close; every committed write is on disk."""
        async with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One atomic write: committed if the block finishes, rolled back otherwise."""
        async with self.lock, self.transaction_held() as conn:
            yield conn

    @asynccontextmanager
    async def transaction_held(self) -> AsyncIterator[aiosqlite.Connection]:
        """transaction() for a caller that holds `lock` already."""
        conn = self._connection()
        try:
            try:
                # IMMEDIATE: take the write lock now, so a busy database fails here
                # (after busy_timeout) rather than halfway through the block.
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # Also on cancellation: the statement being awaited still runs on
                # aiosqlite's thread, and this ROLLBACK is queued behind it.
                await _rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the database {self._path}: {exc}") from exc

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for statements outside a transaction (reads, checkpoints)."""
        async with self.lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the database {self._path}: {exc}") from exc

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self.reading() as conn:
            return list(await conn.execute_fetchall(sql, params))

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(f"the database {self._path} is closed")
        return self._conn


def create_owner_only(path: Path, *, exclusive: bool = False) -> bool:
    """Create an empty file readable by its owner only; True if created, False if it existed.

    `exclusive`: an existing file is an error (FileExistsError) instead of being kept.
    SQLite gives a database's -wal and -shm files the database file's permissions, so they
    are owner-only too.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, OWNER_ONLY)
    except FileExistsError:
        if exclusive:
            raise
        return False
    try:
        # The umask may have taken bits away (e.g. 0277 gives 0400): set exactly 0600.
        os.fchmod(fd, OWNER_ONLY)
    finally:
        os.close(fd)
    return True


def make_folder(path: Path) -> None:
    """Create the folder of a database file (and its parents) if missing, owner-only."""
    path.parent.mkdir(mode=OWNER_ONLY_FOLDER, parents=True, exist_ok=True)


async def connect(name: str) -> aiosqlite.Connection:
    """Open (creating it if needed) and upgrade the database file `name`, or ":memory:"."""
    if name != ":memory:":
        try:
            make_folder(Path(name))
        except OSError as exc:
            raise StoreError(f"cannot create the folder for the database {name}: {exc}") from exc
    try:
        # Probed first with plain sqlite3: when aiosqlite's connect fails, its worker thread
        # may report to the event loop after it closed, and print a stray traceback.
        await asyncio.to_thread(_probe, name)
        conn = await aiosqlite.connect(name, isolation_level=None)  # we BEGIN/COMMIT ourselves
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open the database {name}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        await _configure(conn)
        old_version = await schema_version(conn)
        new_version = await migrate(conn)
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, sqlite3.Error | SchemaTooNew):
            raise StoreError(f"cannot open the database {name}: {exc}") from exc
        raise
    if new_version != old_version:
        log.info("database %s upgraded from schema %d to %d", name, old_version, new_version)
    return conn


def _probe(name: str) -> None:
    if name != ":memory:" and not Path(name).is_dir():
        # Created here, before SQLite would create it with the umask's permissions (often
        # world-readable). A folder in the way is left for sqlite3 to report.
        create_owner_only(Path(name))
    sqlite3.connect(name).close()


async def _configure(conn: aiosqlite.Connection) -> None:
    # Another process (the `history` command) may hold the lock for a moment.
    await conn.execute("PRAGMA busy_timeout = 5000")
    # The first statement that reads the file: "file is not a database" surfaces here.
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    # FULL syncs the WAL at every commit: a stored turn survives a power cut. Writes are few
    # (a turn, and a checkpoint of each answer in progress every few seconds, batched).
    await conn.execute("PRAGMA synchronous = FULL")
    # Deleted dialogues are overwritten on disk, not just unlinked (deleting a user's data).
    await conn.execute("PRAGMA secure_delete = ON")


async def _rollback(conn: aiosqlite.Connection) -> None:
    # No transaction is fine: BEGIN failed, or SQLite already rolled back (e.g. disk full).
    with contextlib.suppress(sqlite3.OperationalError):
        await conn.execute("ROLLBACK")
