"""ChatService: one user message in, a stream of reply events out; the store is kept in step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bot.chat.limits import MessageRate
from bot.chat.prompt import PromptBuilder, PromptMessage
from bot.chat.reasoning import ReasoningSplitter
from bot.config import ChatSettings, GenerationSettings
from bot.engine.base import (
    Engine,
    EngineBusy,
    EngineError,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStream,
    SamplingParams,
    TextDelta,
)
from bot.types import (
    AnswerDelta,
    ChatError,
    ChatKey,
    Queued,
    ReasoningDelta,
    ReplyEvent,
    ReplyFinished,
    ReplyStatus,
    Started,
)

log = logging.getLogger(__name__)

_STATUS_OF = {
    FinishReason.EOS: ReplyStatus.COMPLETE,
    FinishReason.STOP: ReplyStatus.COMPLETE,
    FinishReason.LENGTH: ReplyStatus.LENGTH,
    FinishReason.CANCELLED: ReplyStatus.STOPPED,
    FinishReason.TIMEOUT: ReplyStatus.TIMEOUT,
    FinishReason.SHUTDOWN: ReplyStatus.INTERRUPTED,
    FinishReason.ERROR: ReplyStatus.FAILED,
}


TRIMMED_NOTE = (
    "(Older messages of this dialogue no longer fit the model's context and are not seen by "
    "it any more; /reset starts a fresh one.)"
)
_MAX_REMEMBERED_DIALOGUES = 100_000


class Reply:
    """The events of one answer; iterate it. The answer is stored whether or not anyone listens."""

    def __init__(self, key: ChatKey) -> None:
        self.key = key
        self._events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        self._task: asyncio.Task[ReplyFinished] | None = None
        self._stream: GenerationStream | None = None
        # The row in the store that this answer streams into (checkpointed while it runs).
        self.reply_id: int | None = None
        # Said once per dialogue, with the first answer whose prompt left older turns out.
        self.context_note: str | None = None
        self._is_interrupted = False
        self._is_done = False
        self._is_settled = asyncio.Event()  # start_reply has finished: running, or refused

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self

    async def __anext__(self) -> ReplyEvent:
        if self._is_done:
            raise StopAsyncIteration
        event = await self._events.get()
        if isinstance(event, ReplyFinished):
            self._is_done = True
        return event

    def stop(self) -> None:
        """The user asked to stop: the engine stops generating at its next step."""
        if self._stream is not None:
            self._stream.cancel()

    def interrupt(self) -> None:
        """The bot is shutting down: stop, and store the reply as interrupted."""
        self._is_interrupted = True
        self.stop()

    async def finished(self) -> ReplyFinished:
        """Wait until the reply is stored; returns its final event."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def _settled(self) -> None:
        """Wait until it was refused, or (if it started) until it is stored."""
        await self._is_settled.wait()
        if self._task is not None:
            await self.finished()


@dataclass(frozen=True, slots=True)
class SystemPrompt:
    text: str
    is_custom: bool  # set for this chat with /system (else the configured default)


class ChatService:
    """Turns, admin commands and the store; knows nothing about any platform."""

    def __init__(
        self,
        store: Any,
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
        reply = Reply(key)
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
                stream = self._engine.submit(request)
            except EngineBusy:
                raise ChatError("I'm very busy right now; please try again in a minute.") from None
            except EngineError as exc:
                raise ChatError(f"I can't answer right now: {exc}") from None
            reply._stream = stream
            try:
                if is_regenerate:
                    await self._store.supersede_last_answer(key)
                else:
                    await self._store.add_user_message(key, text)
                # A 'streaming' row from the start: a killed bot leaves it (with the last
                # checkpoint's text) for recover_interrupted to turn into 'interrupted'.
                reply.reply_id = await self._store.begin_reply(key)
            except BaseException:
                stream.cancel()
                raise
        except BaseException:
            del self._active[key]
            reply._is_settled.set()
            raise
        self._rate.take((key.platform, key.user_id))  # accepted: it counts against the rate
        if reply._is_interrupted:
            stream.cancel()  # shutdown began while it was starting: it ends as interrupted
        splitter = ReasoningSplitter(starts_in_reasoning=prompt.opens_reasoning)
        reply._task = asyncio.create_task(self._run(reply, stream, splitter), name=f"reply {key}")
        reply._is_settled.set()
        return reply

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
        await asyncio.gather(*(r._settled() for r in replies), return_exceptions=True)

    async def _run(
        self, reply: Reply, stream: GenerationStream, splitter: ReasoningSplitter
    ) -> ReplyFinished:
        answer: list[str] = []
        reasoning: list[str] = []

        def publish(events: list[ReasoningDelta | AnswerDelta]) -> None:
            for event in events:
                (reasoning if isinstance(event, ReasoningDelta) else answer).append(event.text)
                reply._events.put_nowait(event)

        finished: Finished | None = None
        is_done = asyncio.Event()
        checkpoints = asyncio.create_task(
            self._checkpoint_until(is_done, reply, answer, reasoning),
            name=f"checkpoints {reply.key}",
        )
        try:
            async for event in stream:
                if isinstance(event, Queued | Started):
                    reply._events.put_nowait(event)
                elif isinstance(event, TextDelta):
                    publish(splitter.push(event.text))
                elif isinstance(event, Finished):
                    finished = event
        except asyncio.CancelledError:
            stream.cancel()
            reply._is_interrupted = True
        except Exception:
            log.exception("reply %s: engine stream failed", reply.key)
        finally:
            # Not cancelled: a checkpoint write under way finishes, then the loop ends.
            is_done.set()
        publish(splitter.flush())
        final = self._final_event(reply, finished, "".join(answer), "".join(reasoning))
        try:
            await asyncio.shield(checkpoints)  # a checkpoint under way lands before the end
            await self._store_reply(reply, final)
        finally:
            self._active.pop(reply.key, None)
            reply._events.put_nowait(final)
            self._log_reply(reply.key, final, finished)
            self._report(reply.key, final)
        return final

    def _final_event(
        self, reply: Reply, finished: Finished | None, answer: str, reasoning: str
    ) -> ReplyFinished:
        if reply._is_interrupted:
            status = ReplyStatus.INTERRUPTED
        elif finished is None:
            status = ReplyStatus.FAILED
        else:
            status = _STATUS_OF[finished.reason]
        return ReplyFinished(
            status=status,
            answer=answer.strip(),
            reasoning=reasoning.strip(),
            note=" ".join(filter(None, (self._note(status, finished), reply.context_note))) or None,
            num_prompt_tokens=finished.num_prompt_tokens if finished else 0,
            num_generated_tokens=finished.num_generated_tokens if finished else 0,
            first_token_seconds=finished.first_token_seconds if finished else None,
            total_seconds=finished.total_seconds if finished else 0.0,
            num_reused_tokens=finished.num_reused_tokens if finished else 0,
        )

    def _first_trim_note(self, conversation_id: int) -> str | None:
        """TRIMMED_NOTE the first time a dialogue outgrows the context; None after that."""
        if conversation_id in self._told_trimmed:
            return None
        self._told_trimmed[conversation_id] = None
        if len(self._told_trimmed) > _MAX_REMEMBERED_DIALOGUES:
            self._told_trimmed.pop(next(iter(self._told_trimmed)))  # the oldest one
        return TRIMMED_NOTE

    def _note(self, status: ReplyStatus, finished: Finished | None) -> str | None:
        if status is ReplyStatus.COMPLETE:
            return None
        if status is ReplyStatus.LENGTH:
            count = finished.num_generated_tokens if finished else 0
            return f"(The answer was cut off at the length limit of {count} tokens.)"
        if status is ReplyStatus.STOPPED:
            return "(Stopped.)"
        if status is ReplyStatus.TIMEOUT:
            return f"(Stopped: the answer took longer than {self._generation.timeout_seconds:g} s.)"
        if status is ReplyStatus.INTERRUPTED:
            return "(Interrupted: the bot is restarting. Send your message again in a moment.)"
        error = finished.error if finished and finished.error else "an internal error"
        return f"(Sorry, something went wrong: {error}.)"

    async def _checkpoint_until(
        self, is_done: asyncio.Event, reply: Reply, answer: list[str], reasoning: list[str]
    ) -> None:
        """Save the text so far every checkpoint_seconds while the answer streams.

        A timer, not a write per token: the store batches the writes of all answers, and the
        token loop never waits on the disk. Failures are logged; the next checkpoint retries.
        """
        saved = (0, 0)
        while not is_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(is_done.wait(), self._checkpoint_seconds)
            sizes = (len(answer), len(reasoning))
            if is_done.is_set() or sizes == saved or reply.reply_id is None:
                continue  # done: finish_reply stores the whole text
            try:
                await self._store.checkpoint_reply(
                    reply.reply_id, "".join(answer), "".join(reasoning)
                )
                saved = sizes
            except Exception:
                log.warning("reply %s: checkpoint failed", reply.key, exc_info=True)

    async def _store_reply(self, reply: Reply, final: ReplyFinished) -> None:
        # Shielded: a cancelled front-end must not lose what the model already wrote.
        if reply.reply_id is None:
            return
        await asyncio.shield(
            self._store.finish_reply(
                reply.reply_id,
                answer=final.answer,
                reasoning=final.reasoning,
                status=final.status,
                num_prompt_tokens=final.num_prompt_tokens,
                num_generated_tokens=final.num_generated_tokens,
                first_token_seconds=final.first_token_seconds,
                total_seconds=final.total_seconds,
            )
        )

    def _report(self, key: ChatKey, final: ReplyFinished) -> None:
        if self._on_reply is None:
            return
        try:
            self._on_reply(key.platform, final)
        except Exception:  # counting must never cost a user their answer
            log.exception("reply %s: reporting it to the metrics failed", key)

    @staticmethod
    def _log_reply(key: ChatKey, final: ReplyFinished, finished: Finished | None) -> None:
        decode_rate = 0.0
        if (
            finished
            and finished.first_token_seconds is not None
            and finished.num_generated_tokens > 1
        ):
            decode_time = finished.total_seconds - finished.first_token_seconds
            decode_rate = (
                (finished.num_generated_tokens - 1) / decode_time if decode_time > 0 else 0.0
            )
        log.info(
            "reply %s status=%s prompt=%d reused=%d generated=%d queued=%.2fs first_token=%s "
            "total=%.2fs decode=%.1f tok/s",
            key,
            final.status,
            final.num_prompt_tokens,
            finished.num_reused_tokens if finished else 0,
            final.num_generated_tokens,
            finished.queued_seconds if finished else 0.0,
            "-" if final.first_token_seconds is None else f"{final.first_token_seconds:.2f}s",
            final.total_seconds,
            decode_rate,
        )

    # ---- dialogue administration ---------------------------------------------------------

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
