"""What the store returns: stored messages, replies cut by a restart, what a deletion removed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.types import ChatKey


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
    finished_at: str | None  # when generation ended; None for user messages and while streaming
    location: str | None = None  # where a front-end shows the reply (its own opaque string)
    superseded_at: str | None = None  # set when the user regenerated this answer

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
            "location": self.location,
            "superseded_at": self.superseded_at,
        }


@dataclass(frozen=True, slots=True)
class InterruptedReply:
    """A reply that was still streaming when the bot stopped without finishing it (kill -9).

    `answer` and `reasoning` are its last checkpoint, about what the user saw; `location` is
    what the front-end stored with `set_reply_location` (None if it stored nothing).
    """

    key: ChatKey
    reply_id: int
    answer: str
    reasoning: str
    location: str | None


@dataclass(frozen=True, slots=True)
class DeletedData:
    """What deleting a user's data removed."""

    num_messages: int
    num_conversations: int

    @property
    def is_empty(self) -> bool:
        return self.num_messages == 0 and self.num_conversations == 0


# Every column of MessageRecord, in a query over messages `m` joined to their conversation `c`.
SELECT_MESSAGES = (
    "SELECT m.id, m.conversation_id, c.platform, c.chat_id, c.user_id, m.role, m.content,"
    " m.reasoning, m.status, m.num_prompt_tokens, m.num_generated_tokens,"
    " m.first_token_seconds, m.total_seconds, m.created_at, m.finished_at, m.location,"
    " m.superseded_at"
    " FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id"
)

_SELECT_MESSAGE = SELECT_MESSAGES + " WHERE m.id = ?"


async def fetch_message(conn: aiosqlite.Connection, message_id: int) -> MessageRecord:
    """The stored message with this id (which must exist)."""
    rows = list(await conn.execute_fetchall(_SELECT_MESSAGE, (message_id,)))
    return message_from_row(rows[0])


def message_from_row(row: sqlite3.Row) -> MessageRecord:
    """A MessageRecord from a row selected with SELECT_MESSAGES."""
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
        location=row["location"],
        superseded_at=row["superseded_at"],
    )
