"""The SQL of per-chat settings (a chat's own system prompt, ...): one value per name."""

from __future__ import annotations

import aiosqlite

SYSTEM_PROMPT = "system_prompt"

_GET = "SELECT value FROM chat_settings WHERE platform = ? AND chat_id = ? AND name = ?"
_DELETE = "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? AND name = ?"
_SET = (
    "INSERT INTO chat_settings (platform, chat_id, name, value, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, chat_id, name)"
    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


async def get(conn: aiosqlite.Connection, platform: str, chat_id: str, name: str) -> str | None:
    rows = list(await conn.execute_fetchall(_GET, (platform, chat_id, name)))
    return rows[0][0] if rows else None


async def put(
    conn: aiosqlite.Connection, platform: str, chat_id: str, name: str, value: str | None, now: str
) -> None:
    """Set a chat's setting (inside the caller's transaction); None deletes it."""
    if value is None:
        await conn.execute(_DELETE, (platform, chat_id, name))
    else:
        await conn.execute(_SET, (platform, chat_id, name, value, now))
