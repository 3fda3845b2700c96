"""SqliteStore: dialogues, their messages and per-chat settings in one SQLite file (aiosqlite)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any

from bot.store import chat_settings, dialogues, maintenance, replies
from bot.store.connection import Database
from bot.store.records import DeletedData, InterruptedReply, MessageRecord, StoreError
from bot.types import ChatKey, ReplyStatus

Clock = Callable[[], datetime]


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

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock
        # Checkpoints waiting for the lock, by reply id: the next write saves them all.
        self._checkpoints: dict[int, tuple[str, str]] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Clock = utc_now) -> _Opening:
        """Open (creating it and its folder if needed) and upgrade the database at `path`."""
        return _Opening(path, clock)

    @property
    def path(self) -> str:
        return self._db.path

    @property
    def is_closed(self) -> bool:
        return self._db.is_closed

    async def close(self) -> None:
        """Wait for running writes, then close; every committed write is on disk."""
        await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- messages ----------------------------------------------------------------------

    async def add_user_message(self, key: ChatKey, text: str) -> MessageRecord:
        """Store a user's message in the key's current dialogue (started if there is none)."""
        now = self._now()
        async with self._db.transaction() as conn:
            return await dialogues.add_user_message(conn, key, text, now)

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
        the start of the new dialogue. (begin_reply + finish_reply in one transaction.)
        """
        status = replies.check_final_status(status)
        now = self._now()
        async with self._db.transaction() as conn:
            if isinstance(target, ChatKey):
                conversation_id = await dialogues.of_latest_question(conn, target, now)
            elif await dialogues.exists(conn, target):
                conversation_id = target
            else:
                raise StoreError(f"no conversation {target} in the database {self.path}")
            reply_id = await replies.begin(conn, conversation_id, now)
            record = await replies.finish(
                conn,
                reply_id,
                answer=answer,
                reasoning=reasoning,
                status=status,
                num_prompt_tokens=num_prompt_tokens,
                num_generated_tokens=num_generated_tokens,
                first_token_seconds=first_token_seconds,
                total_seconds=total_seconds,
                now=now,
            )
        assert record is not None  # inserted in this very transaction
        return record

    async def history(self, key: ChatKey) -> list[MessageRecord]:
        """The messages of the key's current dialogue, oldest first (empty after a reset).

        A reply still being written is left out: it joins the dialogue when it ends (however
        it ends), or as interrupted when a restart finds it (`recover_interrupted`). One
        answer per user runs at a time, so a new turn never misses one that ended.
        """
        async with self._db.reading() as conn:
            return await dialogues.history(conn, key)

    async def supersede_last_answer(self, key: ChatKey) -> bool:
        """Mark the current dialogue's last message superseded if it is an answer (regenerate).

        It stays stored (history --json shows it) but leaves the dialogue's history.
        """
        async with self._db.transaction() as conn:
            return await dialogues.supersede_last_answer(conn, key, self._now())

    async def query_messages(
        self,
        platform: str | None = None,
        chat_id: str | None = None,
        user_id: str | None = None,
    ) -> list[MessageRecord]:
        """Every stored message (all dialogues, closed ones and replies streaming too), by id."""
        async with self._db.reading() as conn:
            return await dialogues.query(conn, platform, chat_id, user_id)

    async def current_conversation_id(self, key: ChatKey) -> int | None:
        """The id of the key's current dialogue; None before its first message or after reset."""
        async with self._db.reading() as conn:
            return await dialogues.current_id(conn, key)

    # ---- replies in progress --------------------------------------------------------------

    async def begin_reply(self, key: ChatKey) -> int:
        """Store an empty reply with status 'streaming'; returns its id for the calls below.

        Call it right after the user's message is stored: the reply goes to the dialogue of
        the key's latest user message, and stays next to its question if the user resets.
        """
        now = self._now()
        async with self._db.transaction() as conn:
            conversation_id = await dialogues.of_latest_question(conn, key, now)
            return await replies.begin(conn, conversation_id, now)

    async def checkpoint_reply(self, reply_id: int, answer: str, reasoning: str = "") -> None:
        """Save the text so far of a reply that is still streaming.

        Cheap enough for every reply every few seconds: calls that arrive while another write
        runs are saved together, in one transaction. A reply that already ended is left as it
        is. Best effort: if a write fails, the texts it carried wait for their next checkpoint.
        """
        self._checkpoints[reply_id] = (answer, reasoning)
        async with self._db.lock:
            batch, self._checkpoints = self._checkpoints, {}
            if batch:  # else an earlier caller's write took this text along
                async with self._db.transaction_held() as conn:
                    await replies.checkpoint(conn, batch)

    async def finish_reply(
        self,
        reply_id: int,
        *,
        answer: str,
        reasoning: str = "",
        status: ReplyStatus | str = ReplyStatus.COMPLETE,
        num_prompt_tokens: int = 0,
        num_generated_tokens: int = 0,
        first_token_seconds: float | None = None,
        total_seconds: float | None = None,
    ) -> MessageRecord | None:
        """Store how a reply begun with begin_reply ended, on its row.

        None if the row is gone: the user's data was deleted while the answer was written.
        """
        status = replies.check_final_status(status)
        self._checkpoints.pop(reply_id, None)
        async with self._db.transaction() as conn:
            return await replies.finish(
                conn,
                reply_id,
                answer=answer,
                reasoning=reasoning,
                status=status,
                num_prompt_tokens=num_prompt_tokens,
                num_generated_tokens=num_generated_tokens,
                first_token_seconds=first_token_seconds,
                total_seconds=total_seconds,
                now=self._now(),
            )

    async def set_reply_location(self, reply_id: int, location: str | None) -> bool:
        """Remember where a front-end shows a reply (its own string, e.g. JSON with message ids).

        Returned by recover_interrupted after a restart, to edit that message. False if there
        is no such reply.
        """
        async with self._db.transaction() as conn:
            return await replies.set_location(conn, reply_id, location)

    async def recover_interrupted(self) -> list[InterruptedReply]:
        """Mark replies left 'streaming' by a bot that was killed as interrupted; returns them.

        Their text (the last checkpoint) is kept, and they stay in the dialogue. Only the bot
        itself calls this, at start-up, before it takes messages: another process (`history`,
        `backup`) opening the database while the bot runs must not cut its answers.
        """
        async with self._db.transaction() as conn:
            return await replies.recover(conn, self._now())

    # ---- a user's data -------------------------------------------------------------------

    async def count_user_data(
        self, user_id: str, *, platform: str | None = None, chat_id: str | None = None
    ) -> DeletedData:
        """What delete_user_data would delete now."""
        async with self._db.reading() as conn:
            return await maintenance.count_user_data(conn, user_id, platform, chat_id)

    async def delete_user_data(
        self, user_id: str, *, platform: str | None = None, chat_id: str | None = None
    ) -> DeletedData:
        """Delete every dialogue of a user (on one platform / in one chat if given).

        Messages are overwritten on disk (secure_delete) and the WAL is emptied if no other
        connection is reading; copies made by `backup` are not touched.
        """
        async with self._db.transaction() as conn:
            deleted = await maintenance.delete_user_data(conn, user_id, platform, chat_id)
        with contextlib.suppress(StoreError):  # busy: SQLite's next checkpoint does it
            async with self._db.reading() as conn:
                await maintenance.truncate_wal(conn)
        return deleted

    # ---- resets ------------------------------------------------------------------------

    async def reset(self, key: ChatKey) -> bool:
        """Close the key's current dialogue (kept stored); False if it had none."""
        async with self._db.transaction() as conn:
            return await dialogues.close(conn, key, self._now())

    async def reset_chat(self, platform: str, chat_id: str) -> int:
        """Close every user's current dialogue in a chat; returns how many were closed."""
        async with self._db.transaction() as conn:
            return await dialogues.close_chat(conn, platform, chat_id, self._now())

    # ---- per-chat settings -------------------------------------------------------------

    async def get_chat_setting(self, platform: str, chat_id: str, name: str) -> str | None:
        async with self._db.reading() as conn:
            return await chat_settings.get(conn, platform, chat_id, name)

    async def set_chat_setting(
        self, platform: str, chat_id: str, name: str, value: str | None
    ) -> None:
        """Set a chat's setting; None deletes it."""
        async with self._db.transaction() as conn:
            await chat_settings.put(conn, platform, chat_id, name, value, self._now())

    async def delete_chat_setting(self, platform: str, chat_id: str, name: str) -> None:
        await self.set_chat_setting(platform, chat_id, name, None)

    async def get_system_prompt(self, platform: str, chat_id: str) -> str | None:
        """The chat's own system prompt (set with /system), or None for the default."""
        return await self.get_chat_setting(platform, chat_id, chat_settings.SYSTEM_PROMPT)

    async def set_system_prompt(self, platform: str, chat_id: str, text: str | None) -> None:
        """Set the chat's system prompt; None goes back to the default."""
        await self.set_chat_setting(platform, chat_id, chat_settings.SYSTEM_PROMPT, text)

    # ---- internals ---------------------------------------------------------------------

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="milliseconds")


async def _open(path: str | os.PathLike[str], clock: Clock) -> SqliteStore:
    name = os.fspath(path)
    return SqliteStore(await Database.open(name), clock=clock)
