"""Reply: one answer from the engine's stream to the store, its events told to whoever listens.

It owns the answer: it reads the engine's stream, splits reasoning from the answer, publishes
the events, checkpoints the text while it streams and stores it with its final status, whether
or not anyone listens. ChatService decides whether an answer may start and what it is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from bot.chat.reasoning import ReasoningSplitter
from bot.engine.base import Finished, FinishReason, GenerationStream, TextDelta
from bot.streams import EventQueue
from bot.types import (
    AnswerDelta,
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


class ReplyRows(Protocol):
    """What a reply writes to the store: checkpoints while it streams, the whole at the end."""

    async def checkpoint_reply(self, reply_id: int, answer: str, reasoning: str) -> None: ...

    async def finish_reply(
        self,
        reply_id: int,
        *,
        answer: str,
        reasoning: str,
        status: ReplyStatus,
        num_prompt_tokens: int,
        num_generated_tokens: int,
        first_token_seconds: float | None,
        total_seconds: float,
    ) -> None: ...


class Reply(EventQueue[ReplyEvent]):
    """The events of one answer; iterate it. The answer is stored whether or not anyone listens.

    Its life: created when an answer is claimed, `attach`ed to the engine's stream, then either
    `refused` (nothing stored) or `begin`s streaming into its stored row, ending with a
    ReplyFinished event once the row holds the whole answer.
    """

    def __init__(
        self,
        key: ChatKey,
        rows: ReplyRows,
        *,
        checkpoint_seconds: float,
        timeout_seconds: float,
        on_done: Callable[[Reply, ReplyFinished], None],
    ) -> None:
        super().__init__(lambda event: isinstance(event, ReplyFinished))
        self.key = key
        # The row in the store that this answer streams into (checkpointed while it runs).
        self.reply_id: int | None = None
        # Said once per dialogue, with the first answer whose prompt left older turns out.
        self.context_note: str | None = None
        self._rows = rows
        self._checkpoint_seconds = checkpoint_seconds
        self._timeout_seconds = timeout_seconds
        self._on_done = on_done
        self._stream: GenerationStream | None = None
        self._task: asyncio.Task[ReplyFinished] | None = None
        self._is_interrupted = False
        self._is_settled = asyncio.Event()  # begun (running) or refused

    # ---- control (front-ends, ChatService) ---------------------------------------------------

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

    async def settled(self) -> None:
        """Wait until it was refused, or (if it began) until it is stored."""
        await self._is_settled.wait()
        if self._task is not None:
            await self.finished()

    # ---- the start (ChatService) -------------------------------------------------------------

    def attach(self, stream: GenerationStream) -> None:
        """The engine's stream for this answer: stop() and interrupt() reach it from now on."""
        self._stream = stream

    def refuse(self) -> None:
        """It did not start (refused or failed before its row existed): nothing is stored."""
        if self._stream is not None:
            self._stream.cancel()
        self._is_settled.set()

    def begin(self, reply_id: int, splitter: ReasoningSplitter) -> None:
        """Stream into stored row `reply_id`, splitting the model's text with `splitter`."""
        assert self._stream is not None
        self.reply_id = reply_id
        if self._is_interrupted:
            self._stream.cancel()  # shutdown began while it was starting: ends as interrupted
        self._task = asyncio.create_task(
            self._run(self._stream, splitter), name=f"reply {self.key}"
        )
        self._is_settled.set()

    # ---- the answer ------------------------------------------------------------------------

    async def _run(self, stream: GenerationStream, splitter: ReasoningSplitter) -> ReplyFinished:
        answer: list[str] = []
        reasoning: list[str] = []

        def publish(events: list[ReasoningDelta | AnswerDelta]) -> None:
            for event in events:
                (reasoning if isinstance(event, ReasoningDelta) else answer).append(event.text)
                self.put(event)

        finished: Finished | None = None
        is_done = asyncio.Event()
        checkpoints = asyncio.create_task(
            self._checkpoint_until(is_done, answer, reasoning), name=f"checkpoints {self.key}"
        )
        try:
            async for event in stream:
                if isinstance(event, Queued | Started):
                    self.put(event)
                elif isinstance(event, TextDelta):
                    publish(splitter.push(event.text))
                elif isinstance(event, Finished):
                    finished = event
        except asyncio.CancelledError:
            stream.cancel()
            self._is_interrupted = True
        except Exception:
            log.exception("reply %s: engine stream failed", self.key)
        finally:
            # Not cancelled: a checkpoint write under way finishes, then the loop ends.
            is_done.set()
        publish(splitter.flush())
        final = self._final_event(finished, "".join(answer), "".join(reasoning))
        try:
            await asyncio.shield(checkpoints)  # a checkpoint under way lands before the end
            await self._store(final)
        finally:
            self._on_done(self, final)
            self.put(final)
            log_reply(self.key, final, finished)
        return final

    def _final_event(self, finished: Finished | None, answer: str, reasoning: str) -> ReplyFinished:
        if self._is_interrupted:
            status = ReplyStatus.INTERRUPTED
        elif finished is None:
            status = ReplyStatus.FAILED
        else:
            status = _STATUS_OF[finished.reason]
        note = status_note(status, finished, timeout_seconds=self._timeout_seconds)
        return ReplyFinished(
            status=status,
            answer=answer.strip(),
            reasoning=reasoning.strip(),
            note=" ".join(filter(None, (note, self.context_note))) or None,
            num_prompt_tokens=finished.num_prompt_tokens if finished else 0,
            num_generated_tokens=finished.num_generated_tokens if finished else 0,
            first_token_seconds=finished.first_token_seconds if finished else None,
            total_seconds=finished.total_seconds if finished else 0.0,
            num_reused_tokens=finished.num_reused_tokens if finished else 0,
        )

    async def _checkpoint_until(
        self, is_done: asyncio.Event, answer: list[str], reasoning: list[str]
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
            if is_done.is_set() or sizes == saved or self.reply_id is None:
                continue  # done: _store writes the whole text
            try:
                await self._rows.checkpoint_reply(
                    self.reply_id, "".join(answer), "".join(reasoning)
                )
                saved = sizes
            except Exception:
                log.warning("reply %s: checkpoint failed", self.key, exc_info=True)

    async def _store(self, final: ReplyFinished) -> None:
        # Shielded: a cancelled front-end must not lose what the model already wrote.
        if self.reply_id is None:
            return
        await asyncio.shield(
            self._rows.finish_reply(
                self.reply_id,
                answer=final.answer,
                reasoning=final.reasoning,
                status=final.status,
                num_prompt_tokens=final.num_prompt_tokens,
                num_generated_tokens=final.num_generated_tokens,
                first_token_seconds=final.first_token_seconds,
                total_seconds=final.total_seconds,
            )
        )


def status_note(
    status: ReplyStatus, finished: Finished | None, *, timeout_seconds: float
) -> str | None:
    """The note an answer that did not complete ends with, telling the user why."""
    if status is ReplyStatus.COMPLETE:
        return None
    if status is ReplyStatus.LENGTH:
        count = finished.num_generated_tokens if finished else 0
        return f"(The answer was cut off at the length limit of {count} tokens.)"
    if status is ReplyStatus.STOPPED:
        return "(Stopped.)"
    if status is ReplyStatus.TIMEOUT:
        return f"(Stopped: the answer took longer than {timeout_seconds:g} s.)"
    if status is ReplyStatus.INTERRUPTED:
        return "(Interrupted: the bot is restarting. Send your message again in a moment.)"
    error = finished.error if finished and finished.error else "an internal error"
    return f"(Sorry, something went wrong: {error}.)"


def log_reply(key: ChatKey, final: ReplyFinished, finished: Finished | None) -> None:
    """The one INFO line per reply, with its timings."""
    decode_rate = 0.0
    if finished and finished.first_token_seconds is not None and finished.num_generated_tokens > 1:
        decode_time = finished.total_seconds - finished.first_token_seconds
        decode_rate = (finished.num_generated_tokens - 1) / decode_time if decode_time > 0 else 0.0
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
