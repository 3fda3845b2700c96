"""Store: what the chat service (ChatService and its Replies) needs from a dialogue store.

SqliteStore is the one implementation; the service is typed with this protocol so that what it
relies on is written in one place, and a test checks that SqliteStore offers all of it.
"""

from __future__ import annotations

from typing import Protocol

from bot.store.records import MessageRecord
from bot.types import ChatKey, ReplyStatus


class Store(Protocol):
    """Dialogues per ChatKey, the replies being written into them, and per-chat prompts."""

    async def history(self, key: ChatKey) -> list[MessageRecord]:
        """The key's current dialogue, oldest first, without replies still being written."""
        ...

    async def add_user_message(self, key: ChatKey, text: str) -> MessageRecord:
        """Store a user's message in the key's current dialogue (started if there is none)."""
        ...

    async def supersede_last_answer(self, key: ChatKey) -> bool:
        """Take the dialogue's last answer out of its history (kept stored); False if none."""
        ...

    async def begin_reply(self, key: ChatKey) -> int:
        """Store an empty streaming reply next to the key's latest question; its id."""
        ...

    async def checkpoint_reply(self, reply_id: int, answer: str, reasoning: str = "") -> None:
        """Save the text so far of a reply still streaming (best effort)."""
        ...

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
        """Store how a reply ended; None if its row is gone (the user's data was deleted)."""
        ...

    async def set_reply_location(self, reply_id: int, location: str | None) -> bool:
        """Remember where a front-end shows a reply; False if there is no such reply."""
        ...

    async def reset(self, key: ChatKey) -> bool:
        """Close the key's current dialogue (kept stored); False if it had none."""
        ...

    async def reset_chat(self, platform: str, chat_id: str) -> int:
        """Close every user's current dialogue in a chat; how many were closed."""
        ...

    async def get_system_prompt(self, platform: str, chat_id: str) -> str | None:
        """The chat's own system prompt, or None for the configured default."""
        ...

    async def set_system_prompt(self, platform: str, chat_id: str, text: str | None) -> None:
        """Set the chat's system prompt; None goes back to the default."""
        ...
