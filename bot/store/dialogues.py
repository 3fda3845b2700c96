"""The SQL of dialogues: a key's current one (started, read, closed) and the user's messages.

Each function runs on `conn` inside the transaction or read that the caller (SqliteStore) holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

from bot.store.records import SELECT_MESSAGES, MessageRecord, fetch_message, message_from_row
from bot.types import ChatKey

_HISTORY = (
    SELECT_MESSAGES
    + " WHERE c.platform = ? AND c.chat_id = ? AND c.user_id = ? AND c.closed_at IS NULL"
    " AND m.status != 'streaming' AND m.superseded_at IS NULL ORDER BY m.id"
)
# A filter given as NULL matches everything.
_QUERY_MESSAGES = (
    SELECT_MESSAGES + " WHERE (?1 IS NULL OR c.platform = ?1) AND (?2 IS NULL OR c.chat_id = ?2)"
    " AND (?3 IS NULL OR c.user_id = ?3) ORDER BY m.id"
)
_CURRENT = (
    "SELECT id FROM conversations WHERE platform = ? AND chat_id = ? AND user_id = ?"
    " AND closed_at IS NULL"
)
_START = "INSERT INTO conversations (platform, chat_id, user_id, created_at) VALUES (?, ?, ?, ?)"
_OF_LATEST_QUESTION = (
    "SELECT m.conversation_id FROM messages AS m"
    " JOIN conversations AS c ON c.id = m.conversation_id"
    " WHERE c.platform = ? AND c.chat_id = ? AND c.user_id = ? AND m.role = 'user'"
    " ORDER BY m.id DESC LIMIT 1"
)
_EXISTS = "SELECT 1 FROM conversations WHERE id = ?"
_INSERT_USER_MESSAGE = (
    "INSERT INTO messages (conversation_id, role, content, reasoning, status, created_at)"
    " VALUES (?, 'user', ?, '', 'complete', ?)"
)
_LAST_MESSAGE = (
    "SELECT m.id, m.role FROM messages m JOIN conversations c"
    " ON c.id = m.conversation_id WHERE c.platform = ? AND c.chat_id = ?"
    " AND c.user_id = ? AND c.closed_at IS NULL AND m.status != 'streaming'"
    " AND m.superseded_at IS NULL ORDER BY m.id DESC LIMIT 1"
)
_SUPERSEDE = "UPDATE messages SET superseded_at = ? WHERE id = ?"
_CLOSE = (
    "UPDATE conversations SET closed_at = ? WHERE platform = ? AND chat_id = ?"
    " AND user_id = ? AND closed_at IS NULL"
)
_CLOSE_CHAT = (
    "UPDATE conversations SET closed_at = ? WHERE platform = ? AND chat_id = ?"
    " AND closed_at IS NULL"
)


async def history(conn: aiosqlite.Connection, key: ChatKey) -> list[MessageRecord]:
    """The messages of the key's current dialogue, oldest first, without replies streaming."""
    rows = await conn.execute_fetchall(_HISTORY, (key.platform, key.chat_id, key.user_id))
    return [message_from_row(row) for row in rows]


async def query(
    conn: aiosqlite.Connection, platform: str | None, chat_id: str | None, user_id: str | None
) -> list[MessageRecord]:
    """Every stored message matching the filters (None: any), by id."""
    rows = await conn.execute_fetchall(_QUERY_MESSAGES, (platform, chat_id, user_id))
    return [message_from_row(row) for row in rows]


async def current_id(conn: aiosqlite.Connection, key: ChatKey) -> int | None:
    """The id of the key's current dialogue; None before its first message or after a reset."""
    rows = list(await conn.execute_fetchall(_CURRENT, (key.platform, key.chat_id, key.user_id)))
    return int(rows[0][0]) if rows else None


async def current(conn: aiosqlite.Connection, key: ChatKey, now: str) -> int:
    """The id of the key's current dialogue, started now if it has none."""
    found = await current_id(conn, key)
    if found is not None:
        return found
    row = await conn.execute_insert(_START, (key.platform, key.chat_id, key.user_id, now))
    return _row_id(row)


async def of_latest_question(conn: aiosqlite.Connection, key: ChatKey, now: str) -> int:
    """The dialogue of the key's latest user message (where its answer goes), else current."""
    rows = list(
        await conn.execute_fetchall(_OF_LATEST_QUESTION, (key.platform, key.chat_id, key.user_id))
    )
    if rows:
        return int(rows[0][0])
    return await current(conn, key, now)


async def exists(conn: aiosqlite.Connection, conversation_id: int) -> bool:
    return bool(list(await conn.execute_fetchall(_EXISTS, (conversation_id,))))


async def add_user_message(
    conn: aiosqlite.Connection, key: ChatKey, text: str, now: str
) -> MessageRecord:
    """Store a user's message in the key's current dialogue (started if there is none)."""
    conversation_id = await current(conn, key, now)
    row = await conn.execute_insert(_INSERT_USER_MESSAGE, (conversation_id, text, now))
    return await fetch_message(conn, _row_id(row))


async def supersede_last_answer(conn: aiosqlite.Connection, key: ChatKey, now: str) -> bool:
    """Mark the current dialogue's last message superseded if it is an answer."""
    rows = list(
        await conn.execute_fetchall(_LAST_MESSAGE, (key.platform, key.chat_id, key.user_id))
    )
    if not rows or rows[0][1] != "assistant":
        return False
    await conn.execute(_SUPERSEDE, (now, rows[0][0]))
    return True


async def close(conn: aiosqlite.Connection, key: ChatKey, now: str) -> bool:
    """Close the key's current dialogue (kept stored); False if it had none."""
    return await _changes(conn, _CLOSE, (now, key.platform, key.chat_id, key.user_id)) > 0


async def close_chat(conn: aiosqlite.Connection, platform: str, chat_id: str, now: str) -> int:
    """Close every user's current dialogue in a chat; returns how many were closed."""
    return await _changes(conn, _CLOSE_CHAT, (now, platform, chat_id))


async def _changes(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> int:
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


def _row_id(row: sqlite3.Row | None) -> int:
    assert row is not None  # execute_insert always returns last_insert_rowid()
    return int(row[0])
