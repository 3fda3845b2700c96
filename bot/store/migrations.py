"""Numbered schema migrations; `PRAGMA user_version` holds how many have been applied."""

from __future__ import annotations

import sqlite3

import aiosqlite

# Append only: a migration that has shipped is never edited, since databases out there already
# ran it. Migration N (1-based) is MIGRATIONS[N - 1]; statements end at a line's end with ";".
MIGRATIONS: tuple[str, ...] = (
    # 1: dialogues and their messages.
    """
    CREATE TABLE conversations (
        id         INTEGER PRIMARY KEY,
        platform   TEXT NOT NULL,
        chat_id    TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        created_at TEXT NOT NULL,
        closed_at  TEXT  -- set by /reset; NULL while the dialogue is the current one
    );
    -- At most one current dialogue per (platform, chat, user).
    CREATE UNIQUE INDEX conversations_current
        ON conversations (platform, chat_id, user_id) WHERE closed_at IS NULL;
    CREATE INDEX conversations_by_chat ON conversations (platform, chat_id);
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
        content         TEXT NOT NULL,
        reasoning       TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'complete',
        created_at      TEXT NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    """,
    # 2: token counts and timings of replies; per-chat settings (the /system prompt).
    """
    ALTER TABLE messages ADD COLUMN num_prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN num_generated_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN first_token_seconds REAL;
    ALTER TABLE messages ADD COLUMN total_seconds REAL;
    ALTER TABLE messages ADD COLUMN finished_at TEXT;
    CREATE TABLE chat_settings (
        platform   TEXT NOT NULL,
        chat_id    TEXT NOT NULL,
        name       TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (platform, chat_id, name)
    ) WITHOUT ROWID;
    """,
    # 3: replies stored while they stream (status 'streaming', text checkpointed) so that a
    # killed bot keeps what the user saw; where a front-end shows each reply; deleting a
    # user's data finds their dialogues by user.
    """
    ALTER TABLE messages ADD COLUMN location TEXT;
    CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming';
    CREATE INDEX conversations_by_user ON conversations (user_id, platform);
    """,
    # 4: an answer the user regenerated stays stored, marked superseded, out of the prompts.
    """
    ALTER TABLE messages ADD COLUMN superseded_at TEXT;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer version of the bot than this one."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"schema version {version} is newer than this bot supports ({SCHEMA_VERSION}); "
            "upgrade the bot"
        )
        self.version = version


def split_statements(script: str) -> list[str]:
    """The statements of a migration script, one per item (executescript would commit early)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not _is_only_comments(pending):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()!r}")
    return statements


def _is_only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The number of migrations applied to this database."""
    rows = await conn.execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


async def migrate(conn: aiosqlite.Connection, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Apply the migrations this database lacks, all in one transaction; returns the version."""
    version = await schema_version(conn)
    if version > len(migrations):
        raise SchemaTooNew(version)
    if version == len(migrations):
        return version  # up to date: no write lock needed (a read-only file still opens)
    # IMMEDIATE takes the write lock before the version is read again, so two processes opening
    # the same old database at once cannot both upgrade it. `conn` must be in autocommit mode.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        version = await schema_version(conn)
        if version > len(migrations):
            raise SchemaTooNew(version)
        for number in range(version + 1, len(migrations) + 1):
            for statement in split_statements(migrations[number - 1]):
                await conn.execute(statement)
        # user_version lives in the database header, which is part of the transaction.
        await conn.execute(f"PRAGMA user_version = {len(migrations):d}")
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    return len(migrations)
