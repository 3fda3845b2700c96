"""The SQL of replies in progress: a row that streams, is checkpointed, finished or recovered.

Each function runs inside a transaction the caller (SqliteStore) opened on `conn`.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiosqlite

from bot.store.records import InterruptedReply, MessageRecord, fetch_message
from bot.types import ChatKey, ReplyStatus

# 'streaming' is written out in the SQL (not bound) so that SQLite can use the partial index
# messages_streaming, which makes finding them at start-up cheap however long the history.
_INSERT_STREAMING = (
    "INSERT INTO messages (conversation_id, role, content, reasoning, status, created_at)"
    " VALUES (?, 'assistant', '', '', 'streaming', ?)"
)
# Only a row still streaming: a late checkpoint never overwrites a finished or recovered reply.
_CHECKPOINT = "UPDATE messages SET content = ?, reasoning = ? WHERE id = ? AND status = 'streaming'"
_FINISH = (
    "UPDATE messages SET content = ?, reasoning = ?, status = ?, num_prompt_tokens = ?,"
    " num_generated_tokens = ?, first_token_seconds = ?, total_seconds = ?, finished_at = ?"
    " WHERE id = ? AND role = 'assistant'"
)
_SET_LOCATION = "UPDATE messages SET location = ? WHERE id = ? AND role = 'assistant'"
_SELECT_STREAMING = (
    "SELECT m.id, c.platform, c.chat_id, c.user_id, m.content, m.reasoning, m.location"
    " FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id"
    " WHERE m.status = 'streaming' ORDER BY m.id"
)
_INTERRUPT_STREAMING = "UPDATE messages SET status = ?, finished_at = ? WHERE status = 'streaming'"


async def begin(conn: aiosqlite.Connection, conversation_id: int, now: str) -> int:
    """Insert an empty streaming reply into a conversation; returns its id."""
    row = await conn.execute_insert(_INSERT_STREAMING, (conversation_id, now))
    assert row is not None  # execute_insert always returns last_insert_rowid()
    return int(row[0])


async def checkpoint(conn: aiosqlite.Connection, texts: Mapping[int, tuple[str, str]]) -> None:
    """Save (answer, reasoning) of each reply id that is still streaming."""
    await conn.executemany(
        _CHECKPOINT,
        [(answer, reasoning, reply_id) for reply_id, (answer, reasoning) in texts.items()],
    )


async def finish(
    conn: aiosqlite.Connection,
    reply_id: int,
    *,
    answer: str,
    reasoning: str,
    status: str,
    num_prompt_tokens: int,
    num_generated_tokens: int,
    first_token_seconds: float | None,
    total_seconds: float | None,
    now: str,
) -> MessageRecord | None:
    """Store how a reply ended on its row; None if the row is gone (its user's data deleted)."""
    values = (answer, reasoning, status, num_prompt_tokens, num_generated_tokens)
    timing = (first_token_seconds, total_seconds, now, reply_id)
    async with conn.execute(_FINISH, values + timing) as cursor:
        if cursor.rowcount == 0:
            return None
    return await fetch_message(conn, reply_id)


async def set_location(conn: aiosqlite.Connection, reply_id: int, location: str | None) -> bool:
    """Remember where a front-end shows a reply; False if there is no such reply."""
    async with conn.execute(_SET_LOCATION, (location, reply_id)) as cursor:
        return cursor.rowcount > 0


async def recover(conn: aiosqlite.Connection, now: str) -> list[InterruptedReply]:
    """Mark every reply still streaming as interrupted (text kept); returns them, oldest first."""
    rows = list(await conn.execute_fetchall(_SELECT_STREAMING))
    if rows:
        await conn.execute(_INTERRUPT_STREAMING, (ReplyStatus.INTERRUPTED.value, now))
    return [
        InterruptedReply(
            key=ChatKey(row["platform"], row["chat_id"], row["user_id"]),
            reply_id=row["id"],
            answer=row["content"],
            reasoning=row["reasoning"],
            location=row["location"],
        )
        for row in rows
    ]


def check_final_status(status: ReplyStatus | str) -> str:
    """The value of a status a reply can end with; ValueError for others (e.g. streaming)."""
    value = ReplyStatus(status).value  # ValueError for an unknown status
    if value == ReplyStatus.STREAMING.value:
        raise ValueError("a finished reply cannot have the status 'streaming'")
    return value
