"""SqliteStore: dialogues, their messages and per-chat settings in one SQLite file (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.migrations import SchemaTooNew, migrate, schema_version
from bot.types import ChatKey, ReplyStatus

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

SYSTEM_PROMPT_SETTING = "system_prompt"

_MESSAGE_COLUMNS = """
    m.id, m.conversation_id, c.platform, c.chat_id, c.user_id, m.role, m.content, m.reasoning,
    m.status, m.num_prompt_tokens, m.num_generated_tokens, m.first_token_seconds,
    m.total_seconds, m.created_at, m.finished_at
    FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
"""


class StoreError(Exception):
    """The database cannot be opened or written; the text names the file."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message; `status` is a ReplyStatus value ('complete' for user messages)."""

    id: int
    conversation_id: int
    key: ChatKey
    role: str  # "user" | "assistant" | "system"
    content: str  # the answer proper, without the reasoning
    reasoning: str
    status: str
    num_prompt_tokens: int
    num_generated_tokens: int
    first_token_seconds: float | None
    total_seconds: float | None  # None for user messages
    created_at: str  # UTC, ISO 8601
    finished_at: str | None  # when generation ended; None for user messages

    def as_json(self) -> dict[str, Any]:
        """A flat dict for JSON output (the `history` command)."""
        return {
            "id": self.id,
            "conversation": self.conversation_id,
            "conversation_id": self.conversation_id,
            "platform": self.key.platform,
            "chat_id": self.key.chat_id,
            "user_id": self.key.user_id,
            "role": self.role,
            "content": self.content,
            "reasoning": self.reasoning,
            "status": self.status,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_generated_tokens": self.num_generated_tokens,
            "first_token_seconds": self.first_token_seconds,
            "total_seconds": self.total_seconds,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Opening:
    """What `SqliteStore.open` returns: await it, or use it with `async with`."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock) -> None:
        self._path = path
        self._clock = clock
        self._store: SqliteStore | None = None

    def __await__(self) -> Generator[Any, None, SqliteStore]:
        return _open(self._path, self._clock).__await__()

    async def __aenter__(self) -> SqliteStore:
        self._store = await _open(self._path, self._clock)
        return self._store

    async def __aexit__(self, *exc_info: object) -> None:
        if self._store is not None:
            await self._store.close()


class SqliteStore:
    """Dialogues per ChatKey; safe to call from many asyncio tasks at once.

    A dialogue ("conversation") is current until reset; reset closes it (it stays stored) and
    the key's next message starts a new one. Secrets are never passed in, so never stored.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str, *, clock: Clock = utc_now) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        self._clock = clock
        # One connection serves every task: the lock keeps one task's transaction from
        # interleaving with another's statements (aiosqlite only orders single statements).
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock = utc_now) -> _Opening:
        """Open (creating it and its folder if needed) and upgrade the database at `path`."""
        return _Opening(path, clock)

    @property
    def path(self) -> str:
        return self._path

    @property
    def is_closed(self) -> bool:
        return self._conn is None

    async def close(self) -> None:
        """Wait for running writes, then close; every committed write is on disk."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- messages ----------------------------------------------------------------------

    async def add_user_message(self, key: ChatKey, text: str) -> MessageRecord:
        """Store a user's message in the key's current dialogue (started if there is none)."""
        now = self._now()
        async with self._transaction() as conn:
            conversation_id = await self._current_conversation(conn, key, now)
            message_id = await conn.execute_insert(
                "INSERT INTO messages (conversation_id, role, content, reasoning, status,"
                " created_at) VALUES (?, 'user', ?, '', ?, ?)",
                (conversation_id, text, ReplyStatus.COMPLETE.value, now),
            )
        return MessageRecord(
            id=_row_id(message_id),
            conversation_id=conversation_id,
            key=key,
            role="user",
            content=text,
            reasoning="",
            status=ReplyStatus.COMPLETE.value,
            num_prompt_tokens=0,
            num_generated_tokens=0,
            first_token_seconds=None,
            total_seconds=None,
            created_at=now,
            finished_at=None,
        )

    async def add_assistant_message(
        self,
        target: ChatKey | int,
        *,
        answer: str,
        reasoning: str = "",
        status: ReplyStatus | str = ReplyStatus.COMPLETE,
        num_prompt_tokens: int = 0,
        num_generated_tokens: int = 0,
        first_token_seconds: float | None = None,
        total_seconds: float | None = None,
    ) -> MessageRecord:
        """Store a finished reply (however it ended) in a conversation id, or for a key.

        For a key the reply goes to the dialogue of the key's latest user message, so an answer
        that was still being written when the user reset lands next to its question, not at
        the start of the new dialogue.
        """
        status = ReplyStatus(status).value  # ValueError for an unknown status
        now = self._now()
        async with self._transaction() as conn:
            if isinstance(target, ChatKey):
                key = target
                conversation_id = await self._reply_conversation(conn, key, now)
            else:
                conversation_id = target
                key = await self._conversation_key(conn, conversation_id)
            message_id = await conn.execute_insert(
                "INSERT INTO messages (conversation_id, role, content, reasoning, status,"
                " num_prompt_tokens, num_generated_tokens, first_token_seconds, total_seconds,"
                " created_at, finished_at) VALUES (?, 'assistant', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    answer,
                    reasoning,
                    status,
                    num_prompt_tokens,
                    num_generated_tokens,
                    first_token_seconds,
                    total_seconds,
                    now,
                    now,
                ),
            )
        return MessageRecord(
            id=_row_id(message_id),
            conversation_id=conversation_id,
            key=key,
            role="assistant",
            content=answer,
            reasoning=reasoning,
            status=status,
            num_prompt_tokens=num_prompt_tokens,
            num_generated_tokens=num_generated_tokens,
            first_token_seconds=first_token_seconds,
            total_seconds=total_seconds,
            created_at=now,
            finished_at=now,
        )

    async def history(self, key: ChatKey) -> list[MessageRecord]:
        """The messages of the key's current dialogue, oldest first (empty after a reset)."""
        rows = await self._read(
            f"SELECT {_MESSAGE_COLUMNS} WHERE c.platform = ? AND c.chat_id = ? AND c.user_id = ?"
            " AND c.closed_at IS NULL ORDER BY m.id",
            (key.platform, key.chat_id, key.user_id),
        )
        return [_message(row) for row in rows]

    async def query_messages(
        self,
        platform: str | None = None,
        chat_id: str | None = None,
        user_id: str | None = None,
    ) -> list[MessageRecord]:
        """Every stored message (all dialogues, closed ones too) matching the filters, by id."""
        conditions: list[str] = []
        params: list[str] = []
        for column, value in (("platform", platform), ("chat_id", chat_id), ("user_id", user_id)):
            if value is not None:
                conditions.append(f"c.{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._read(f"SELECT {_MESSAGE_COLUMNS}{where} ORDER BY m.id", params)
        return [_message(row) for row in rows]

    async def current_conversation_id(self, key: ChatKey) -> int | None:
        """The id of the key's current dialogue; None before its first message or after reset."""
        rows = await self._read(
            "SELECT id FROM conversations WHERE platform = ? AND chat_id = ? AND user_id = ?"
            " AND closed_at IS NULL",
            (key.platform, key.chat_id, key.user_id),
        )
        return rows[0][0] if rows else None

    # ---- resets ------------------------------------------------------------------------

    async def reset(self, key: ChatKey) -> bool:
        """Close the key's current dialogue (kept stored); False if it had none."""
        async with self._transaction() as conn:
            return (
                await _changes(
                    conn,
                    "UPDATE conversations SET closed_at = ? WHERE platform = ? AND chat_id = ?"
                    " AND user_id = ? AND closed_at IS NULL",
                    (self._now(), key.platform, key.chat_id, key.user_id),
                )
                > 0
            )

    async def reset_chat(self, platform: str, chat_id: str) -> int:
        """Close every user's current dialogue in a chat; returns how many were closed."""
        async with self._transaction() as conn:
            return await _changes(
                conn,
                "UPDATE conversations SET closed_at = ? WHERE platform = ? AND chat_id = ?"
                " AND closed_at IS NULL",
                (self._now(), platform, chat_id),
            )

    # ---- per-chat settings -------------------------------------------------------------

    async def get_chat_setting(self, platform: str, chat_id: str, name: str) -> str | None:
        rows = await self._read(
            "SELECT value FROM chat_settings WHERE platform = ? AND chat_id = ? AND name = ?",
            (platform, chat_id, name),
        )
        return rows[0][0] if rows else None

    async def set_chat_setting(
        self, platform: str, chat_id: str, name: str, value: str | None
    ) -> None:
        """Set a chat's setting; None deletes it."""
        async with self._transaction() as conn:
            if value is None:
                await _changes(
                    conn,
                    "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? AND name = ?",
                    (platform, chat_id, name),
                )
            else:
                await _changes(
                    conn,
                    "INSERT INTO chat_settings (platform, chat_id, name, value, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, chat_id, name)"
                    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (platform, chat_id, name, value, self._now()),
                )

    async def delete_chat_setting(self, platform: str, chat_id: str, name: str) -> None:
        await self.set_chat_setting(platform, chat_id, name, None)

    async def get_system_prompt(self, platform: str, chat_id: str) -> str | None:
        """The chat's own system prompt (set with /system), or None for the default."""
        return await self.get_chat_setting(platform, chat_id, SYSTEM_PROMPT_SETTING)

    async def set_system_prompt(self, platform: str, chat_id: str, text: str | None) -> None:
        """Set the chat's system prompt; None goes back to the default."""
        await self.set_chat_setting(platform, chat_id, SYSTEM_PROMPT_SETTING, text)

    # ---- internals ---------------------------------------------------------------------

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="milliseconds")

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(f"the database {self._path} is closed")
        return self._conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One atomic write: committed if the block finishes, rolled back otherwise."""
        async with self._lock:
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

    async def _read(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        async with self._lock:
            conn = self._connection()
            try:
                return list(await conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the database {self._path}: {exc}") from exc

    @staticmethod
    async def _current_conversation(conn: aiosqlite.Connection, key: ChatKey, now: str) -> int:
        rows = list(
            await conn.execute_fetchall(
                "SELECT id FROM conversations WHERE platform = ? AND chat_id = ? AND user_id = ?"
                " AND closed_at IS NULL",
                (key.platform, key.chat_id, key.user_id),
            )
        )
        if rows:
            return int(rows[0][0])
        row = await conn.execute_insert(
            "INSERT INTO conversations (platform, chat_id, user_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (key.platform, key.chat_id, key.user_id, now),
        )
        return _row_id(row)

    @classmethod
    async def _reply_conversation(cls, conn: aiosqlite.Connection, key: ChatKey, now: str) -> int:
        rows = list(
            await conn.execute_fetchall(
                "SELECT m.conversation_id FROM messages AS m"
                " JOIN conversations AS c ON c.id = m.conversation_id"
                " WHERE c.platform = ? AND c.chat_id = ? AND c.user_id = ? AND m.role = 'user'"
                " ORDER BY m.id DESC LIMIT 1",
                (key.platform, key.chat_id, key.user_id),
            )
        )
        if rows:
            return int(rows[0][0])
        return await cls._current_conversation(conn, key, now)

    async def _conversation_key(self, conn: aiosqlite.Connection, conversation_id: int) -> ChatKey:
        rows = list(
            await conn.execute_fetchall(
                "SELECT platform, chat_id, user_id FROM conversations WHERE id = ?",
                (conversation_id,),
            )
        )
        if not rows:
            raise StoreError(f"no conversation {conversation_id} in the database {self._path}")
        return ChatKey(*rows[0])


async def _open(path: str | os.PathLike[str], clock: Clock) -> SqliteStore:
    name = os.fspath(path)
    if name != ":memory:":
        try:
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for the database {name}: {exc}") from exc
    try:
        # Probed first with plain sqlite3: when aiosqlite's connect fails, its worker thread
        # may report to the event loop after it closed, and print a stray traceback.
        await asyncio.to_thread(_probe, name)
        conn = await aiosqlite.connect(name, isolation_level=None)  # we BEGIN/COMMIT ourselves
    except sqlite3.Error as exc:
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
    return SqliteStore(conn, name, clock=clock)


def _probe(name: str) -> None:
    sqlite3.connect(name).close()


async def _configure(conn: aiosqlite.Connection) -> None:
    # Another process (the `history` command) may hold the lock for a moment.
    await conn.execute("PRAGMA busy_timeout = 5000")
    # The first statement that reads the file: "file is not a database" surfaces here.
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    # FULL syncs the WAL at every commit: a stored turn survives a power cut, and writes are
    # few (two per answer), so the cost does not matter.
    await conn.execute("PRAGMA synchronous = FULL")


async def _rollback(conn: aiosqlite.Connection) -> None:
    # No transaction is fine: BEGIN failed, or SQLite already rolled back (e.g. disk full).
    with contextlib.suppress(sqlite3.OperationalError):
        await conn.execute("ROLLBACK")


async def _changes(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> int:
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


def _row_id(row: sqlite3.Row | None) -> int:
    assert row is not None  # execute_insert always returns last_insert_rowid()
    return int(row[0])


def _message(row: sqlite3.Row) -> MessageRecord:
    return MessageRecord(
        id=row["id"],
        conversation_id=row["conversation_id"],
        key=ChatKey(row["platform"], row["chat_id"], row["user_id"]),
        role=row["role"],
        content=row["content"],
        reasoning=row["reasoning"],
        status=row["status"],
        num_prompt_tokens=row["num_prompt_tokens"],
        num_generated_tokens=row["num_generated_tokens"],
        first_token_seconds=row["first_token_seconds"],
        total_seconds=row["total_seconds"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )
