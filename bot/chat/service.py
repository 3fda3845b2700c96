"""ChatService: one user message in, a stream of reply events out; the store is kept in step."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.chat.limits import MessageRate
from bot.chat.prompt import Prompt, PromptBuilder, PromptMessage
from bot.chat.reasoning import ReasoningSplitter
from bot.chat.reply import Reply
from bot.config import ChatSettings, GenerationSettings
from bot.engine.base import (
    Engine,
    EngineBusy,
    EngineError,
    GenerationRequest,
    GenerationStream,
    SamplingParams,
)
from bot.store.protocol import Store
from bot.store.records import MessageRecord
from bot.types import ChatError, ChatKey, ReplyFinished

__all__ = ["TRIMMED_NOTE", "ChatService", "Reply", "SystemPrompt"]

log = logging.getLogger(__name__)

TRIMMED_NOTE = (
    "(Older messages of this dialogue no longer fit the model's context and are not seen by "
    "it any more; /reset starts a fresh one.)"
)
_MAX_REMEMBERED_DIALOGUES = 100_000


@dataclass(frozen=True, slots=True)
class SystemPrompt:
    text: str
    is_custom: bool  # set for this chat with /system (else the configured default)


class ChatService:
    """Turns, admin commands and the store; knows nothing about any platform."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        prompts: PromptBuilder,
        *,
        chat: ChatSettings,
        generation: GenerationSettings,
        on_reply: Callable[[str, ReplyFinished], None] | None = None,
        checkpoint_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        # Told of every stored reply (platform, final event): the metrics count them there.
        self._on_reply = on_reply
        self._checkpoint_seconds = checkpoint_seconds
        self._engine = engine
        self._prompts = prompts
        self._chat = chat
        self._generation = generation
        self._rate = MessageRate(chat.messages_per_minute, clock=clock)
        self._active: dict[ChatKey, Reply] = {}
        self._is_closing = False  # interrupt_all has begun: no new answers
        # Dialogues already told that older messages left the prompt (insertion-ordered).
        self._told_trimmed: dict[int, None] = {}

    # ---- turns -------------------------------------------------------------------------

    def check_message(self, key: ChatKey, text: str) -> str:
        """The message as start_reply would take it; ChatError if start_reply would refuse it now.

        Cheap and synchronous, so a front-end can refuse privately before it acknowledges
        publicly (Discord must choose an ephemeral or a public answer at once).
        """
        self._check_free(key)
        text = text.strip()
        if not text:
            raise ChatError("Your message is empty: send me some text.")
        if len(text) > self._chat.max_message_chars:
            raise ChatError(
                f"Your message is too long ({len(text)} characters; the limit is "
                f"{self._chat.max_message_chars}). Please shorten it."
            )
        if not self._rate.allows((key.platform, key.user_id)):
            raise ChatError(
                f"You're sending messages faster than I can take them (the limit is "
                f"{self._chat.messages_per_minute} a minute). Please wait a little."
            )
        num_tokens = self._prompts.count_tokens(text)
        if num_tokens > self._chat.max_message_tokens:
            raise ChatError(
                f"Your message is too long ({num_tokens} tokens; the limit is "
                f"{self._chat.max_message_tokens}). Please shorten it."
            )
        return text

    def _check_free(self, key: ChatKey) -> None:
        """ChatError if no answer may start for `key` now (shutting down, or one is running)."""
        if self._is_closing:
            raise ChatError("I'm restarting. Send your message again in a moment.")
        if key in self._active:
            raise ChatError(
                "I'm still answering your previous message. Wait for it to finish, or send /stop."
            )

    async def start_reply(self, key: ChatKey, text: str) -> Reply:
        """Store the user's message and start answering; ChatError if refused (nothing stored)."""
        return await self._start(key, self.check_message(key, text), is_regenerate=False)

    async def regenerate(self, key: ChatKey) -> Reply:
        """Answer the dialogue's last question again; ChatError if its last message is no answer.

        The old answer stays stored, marked superseded, and leaves later prompts.
        """
        self._check_free(key)
        return await self._start(key, "", is_regenerate=True)

    async def _start(self, key: ChatKey, text: str, *, is_regenerate: bool) -> Reply:
        reply = Reply(
            key,
            self._store,
            checkpoint_seconds=self._checkpoint_seconds,
            timeout_seconds=self._generation.timeout_seconds,
            on_done=self._reply_done,
        )
        self._active[key] = reply  # claimed before any await, so a second message is refused
        try:
            history = await self._store.history(key)
            if is_regenerate:
                history, text = _without_last_exchange(history)
            system = await self.system_prompt(key.platform, key.chat_id)
            prompt = self._prompts.build(
                system.text,
                [PromptMessage(m.role, m.content) for m in history if m.content],
                text,
            )
            if prompt.num_dropped_messages and history:
                reply.context_note = self._first_trim_note(history[0].conversation_id)
            reply.attach(self._submit(key, prompt))
            if is_regenerate:
                await self._store.supersede_last_answer(key)
            else:
                await self._store.add_user_message(key, text)
            # A 'streaming' row from the start: a killed bot leaves it (with the last
            # checkpoint's text) for recover_interrupted to turn into 'interrupted'.
            reply_id = await self._store.begin_reply(key)
        except BaseException:
            del self._active[key]
            reply.refuse()
            raise
        self._rate.take((key.platform, key.user_id))  # accepted: it counts against the rate
        reply.begin(reply_id, ReasoningSplitter(starts_in_reasoning=prompt.opens_reasoning))
        return reply

    def _submit(self, key: ChatKey, prompt: Prompt) -> GenerationStream:
        request = GenerationRequest(
            prompt_ids=prompt.token_ids,
            params=SamplingParams(
                max_new_tokens=prompt.max_new_tokens,
                temperature=self._generation.temperature,
                top_p=self._generation.top_p,
                stop=self._generation.stop,
                timeout_seconds=self._generation.timeout_seconds,
            ),
            owner=str(key),
            messages=prompt.messages,  # what a chat-completions server takes instead
        )
        try:
            return self._engine.submit(request)
        except EngineBusy:
            raise ChatError("I'm very busy right now; please try again in a minute.") from None
        except EngineError as exc:
            raise ChatError(f"I can't answer right now: {exc}") from None

    def _reply_done(self, reply: Reply, final: ReplyFinished) -> None:
        """A reply is stored: the user may send the next message; the metrics count it."""
        if self._active.get(reply.key) is reply:
            del self._active[reply.key]
        if self._on_reply is None:
            return
        try:
            self._on_reply(reply.key.platform, final)
        except Exception:  # counting must never cost a user their answer
            log.exception("reply %s: reporting it to the metrics failed", reply.key)

    async def set_reply_location(self, reply: Reply, location: str) -> None:
        """Remember where a front-end shows `reply` (its own string), for a restart to edit."""
        if reply.reply_id is not None:
            await self._store.set_reply_location(reply.reply_id, location)

    def stop(self, key: ChatKey) -> bool:
        """Stop the answer being written for `key`; False if there is none."""
        reply = self._active.get(key)
        if reply is None:
            return False
        reply.stop()
        return True

    def is_answering(self, key: ChatKey) -> bool:
        return key in self._active

    async def interrupt_all(self) -> None:
        """Shutdown: refuse new messages, cut every answer short, wait until each is stored.

        Answers still starting (reading the history) are waited for too: otherwise one could
        reach the engine or the store after they closed, and its reply would be lost.
        """
        self._is_closing = True
        replies = list(self._active.values())
        for reply in replies:
            reply.interrupt()
        await asyncio.gather(*(r.settled() for r in replies), return_exceptions=True)

    def _first_trim_note(self, conversation_id: int) -> str | None:
        """TRIMMED_NOTE the first time a dialogue outgrows the context; None after that."""
        if conversation_id in self._told_trimmed:
            return None
        self._told_trimmed[conversation_id] = None
        if len(self._told_trimmed) > _MAX_REMEMBERED_DIALOGUES:
            self._told_trimmed.pop(next(iter(self._told_trimmed)))  # the oldest one
        return TRIMMED_NOTE

    # ---- dialogue administration ---------------------------------------------------------

    async def history(self, key: ChatKey) -> list[MessageRecord]:
        """The messages of the key's current dialogue, oldest first (empty after a reset)."""
        return await self._store.history(key)

    async def reset(self, key: ChatKey) -> None:
        """Start a new dialogue for this user in this chat; the old one stays stored."""
        self.stop(key)
        await self._store.reset(key)

    def apply_settings(self, *, chat: ChatSettings, generation: GenerationSettings) -> None:
        """New limits and defaults from a config reload; answers already running keep theirs."""
        self._chat = chat
        self._generation = generation

    async def reset_chat(self, platform: str, chat_id: str) -> int:
        """Start new dialogues for everyone in a chat; returns how many were reset."""
        for key in [k for k in self._active if k.platform == platform and k.chat_id == chat_id]:
            self.stop(key)
        return await self._store.reset_chat(platform, chat_id)

    async def system_prompt(self, platform: str, chat_id: str) -> SystemPrompt:
        custom = await self._store.get_system_prompt(platform, chat_id)
        if custom is None:
            return SystemPrompt(self._chat.system_prompt, is_custom=False)
        return SystemPrompt(custom, is_custom=True)

    async def set_system_prompt(self, platform: str, chat_id: str, text: str | None) -> None:
        """Set this chat's system prompt; None restores the configured default."""
        if text is not None:
            text = text.strip()
            if len(text) > self._chat.max_message_chars:
                raise ChatError(
                    f"That system prompt is too long ({len(text)} characters; the limit is "
                    f"{self._chat.max_message_chars})."
                )
            if self._prompts.count_tokens(text) > self._prompts.max_context_tokens // 4:
                raise ChatError(
                    "That system prompt would take over a quarter of the model's context."
                )
        await self._store.set_system_prompt(platform, chat_id, text)


def _without_last_exchange(history: list[Any]) -> tuple[list[Any], str]:
    """The history before its last question and answer, and that question (to regenerate)."""
    if len(history) < 2 or history[-1].role != "assistant" or history[-2].role != "user":
        raise ChatError("There is no answer of mine to regenerate here.")
    return history[:-2], history[-2].content
