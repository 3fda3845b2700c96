"""The worker thread: it alone owns the model; each iteration plans, launches, then post-processes.

    take the inbox -> expire deadlines -> plan = scheduler.schedule() -> launch the plan on the
    device -> turn the previous launch's tokens into events -> flush the events

The host work of one step (detokenizing, stop strings, events) runs while the device computes
the next: a launch returns at once, and its tokens are read one iteration later. So a sequence
that ended at step N has already been given step N+1; that extra token is discarded, never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bot.engine.base import EngineEvent, FinishReason, GenerationRequest, Queued
from bot.engine.runner import ModelRunner, StepTokens
from bot.engine.scheduler import Plan, PrefillWork, Scheduler
from bot.engine.sequence import Sequence

log = logging.getLogger(__name__)

_IDLE_WAIT_SECONDS = 0.5


# The inbox: what the event loop sends the worker.


@dataclass(frozen=True, slots=True)
class Submit:
    request_id: int
    request: GenerationRequest
    stream: Any
    submitted_at: float


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


InboxMessage = Submit | Cancel | Stop
Deliver = Callable[[list[tuple[Any, EngineEvent]]], None]  # runs on the event loop


@dataclass(slots=True)
class _Launched:
    """A launch whose tokens have not been read yet."""

    tokens: StepTokens
    first_of: list[Sequence]  # the sequences whose prompt completed, in token order
    decoded: list[Sequence]  # the decode rows, in token order


class Worker:
    """The loop of the thread that owns the GPU; see the module docstring."""

    def __init__(
        self,
        runner: ModelRunner,
        scheduler: Scheduler,
        tokenizer: Any,
        *,
        eos_token_ids: frozenset[int],
        inbox: queue.SimpleQueue[InboxMessage],
        on_dequeued: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._scheduler = scheduler
        self._tokenizer = tokenizer
        self._eos = eos_token_ids
        self._inbox = inbox
        # A request left the queue (it started, or ended while waiting): the bound counts it.
        self._on_dequeued = on_dequeued
        self._by_id: dict[int, Sequence] = {}
        self._outbox: list[tuple[Any, EngineEvent]] = []
        self._launched: list[_Launched] = []
        self._is_stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver | None = None

    def run(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        """Serve until told to stop; raises only on a bug of ours (requests fail on their own)."""
        self._loop, self._deliver = loop, deliver
        while not self._is_stopping:
            is_idle = self._scheduler.is_idle and not self._launched
            self._take_inbox(block=is_idle)
            if self._is_stopping:
                break
            self._expire(time.monotonic())
            plan = self._scheduler.schedule(time.monotonic())
            launched = self._launch(plan)
            self._read(self._launched)
            self._launched = launched
            self._report_positions()
            self.flush()

    def end_everything(self, reason: FinishReason, error: str | None) -> None:
        """The worker's last act: end every stream it holds or was sent.

        Nothing is freed on the way (the worker is leaving, and after a crash its bookkeeping
        may be what broke), so this cannot fail where _finish could.
        """
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, Submit):
                self._handle(message)  # only registers it: it ends below
            elif isinstance(message, Cancel) and (seq := self._by_id.get(message.request_id)):
                self._emit(seq, seq.end(FinishReason.CANCELLED, time.monotonic()))
        for seq in list(self._by_id.values()):
            if seq.finish is None:
                seq.error = seq.error or error
                self._emit(seq, seq.end(reason, time.monotonic()))
        self._by_id.clear()

    def flush(self) -> None:
        """Hand the events gathered so far to the event loop, in one batch."""
        if not self._outbox or self._loop is None or self._deliver is None:
            return
        batch, self._outbox = self._outbox, []
        # A closed event loop raises RuntimeError: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, batch)

    # ---- inbox ---------------------------------------------------------------------------

    def _take_inbox(self, *, block: bool) -> None:
        try:
            message = (
                self._inbox.get(timeout=_IDLE_WAIT_SECONDS) if block else self._inbox.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: InboxMessage) -> None:
        if isinstance(message, Stop):
            self._is_stopping = True
        elif isinstance(message, Submit):
            seq = Sequence.create(
                message.request_id,
                message.request,
                message.stream,
                message.submitted_at,
                tokenizer=self._tokenizer,
            )
            self._by_id[seq.request_id] = seq
            self._scheduler.add(seq)
        elif isinstance(message, Cancel) and (seq := self._by_id.get(message.request_id)):
            self._finish(seq, FinishReason.CANCELLED)

    def _expire(self, now: float) -> None:
        for seq in self._scheduler.sequences():
            if now >= seq.deadline:
                self._finish(seq, FinishReason.TIMEOUT)

    # ---- launch and read -----------------------------------------------------------------

    def _launch(self, plan: Plan) -> list[_Launched]:
        for seq, events in plan.started:
            self._on_dequeued()
            params = seq.request.params
            self._runner.set_sampling(seq.slot, params.temperature, params.top_p)
            self._emit(seq, events)
        if plan.is_empty:
            return []
        try:
            return [self._launch_part(plan.prefill, plan.decode)]
        except Exception as exc:
            if len(plan.prefill) + bool(plan.decode) < 2:
                self._fail_all([*(w.sequence for w in plan.prefill), *plan.decode], exc)
                return []
            log.warning("a packed step failed (%r); retrying its parts one by one", exc)
        # One request's prompt (say, too long for the memory left) must not fail the others:
        # each prompt alone, then the decode step of everyone still running.
        _release_cached_memory()
        parts = []
        for work in plan.prefill:
            try:
                parts.append(self._launch_part([work], []))
            except Exception as exc:
                self._fail_all([work.sequence], exc)
                _release_cached_memory()
        decode = [seq for seq in plan.decode if seq.finish is None]
        if decode:
            try:
                parts.append(self._launch_part([], decode))
            except Exception as exc:
                self._fail_all(decode, exc)
                _release_cached_memory()
        return parts

    def _launch_part(self, prefill: list[PrefillWork], decode: list[Sequence]) -> _Launched:
        tokens = self._runner.launch(
            [work.chunk for work in prefill],
            [work.completes_prompt for work in prefill],
            [seq.slot for seq in decode],
            max((self._write_position(seq) for seq in decode), default=0),
        )
        for work in prefill:
            work.sequence.num_cached = work.chunk.end
        for seq in decode:
            seq.num_dispatched += 1
        first_of = [work.sequence for work in prefill if work.completes_prompt]
        return _Launched(tokens, first_of, list(decode))

    def _fail_all(self, sequences: list[Sequence], exc: BaseException) -> None:
        log.error("a step failed for %d requests: %r", len(sequences), exc, exc_info=exc)
        for seq in sequences:
            self._fail(seq, exc)

    @staticmethod
    def _write_position(seq: Sequence) -> int:
        """Where the next decode step of `seq` writes its input token's KV."""
        return seq.num_prompt + seq.num_dispatched

    def _read(self, launched: list[_Launched]) -> None:
        for part in launched:
            firsts, decoded = part.tokens.wait()
            for seq, token in zip(part.first_of, firsts, strict=True):
                self._accept(seq, token)
            for seq, token in zip(part.decoded, decoded, strict=True):
                self._accept(seq, token)

    def _accept(self, seq: Sequence, token: int) -> None:
        if seq.finish is not None:
            return  # it ended while this step ran: the token is discarded
        events = seq.accept_token(
            token,
            eos=self._eos,
            slot_tokens=self._runner.cache_shape.slot_tokens,
            now=time.monotonic(),
        )
        self._emit(seq, events)
        if seq.finish is not None:
            self._forget(seq)

    # ---- endings -------------------------------------------------------------------------

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        seq.error = _describe_error(exc)
        self._finish(seq, FinishReason.ERROR)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End seq's stream and free its place (queue entry or KV slot)."""
        if seq.finish is not None:
            return
        self._emit(seq, seq.end(reason, time.monotonic()))
        self._forget(seq)

    def _forget(self, seq: Sequence) -> None:
        if seq.slot == -1:
            self._on_dequeued()  # it leaves the queue without starting: no longer pending
        self._scheduler.finish(seq)
        self._by_id.pop(seq.request_id, None)

    # ---- events --------------------------------------------------------------------------

    def _report_positions(self) -> None:
        for seq, position in self._scheduler.positions():
            if position != seq.reported_position:
                seq.reported_position = position
                self._emit(seq, [Queued(position)])

    def _emit(self, seq: Sequence, events: list[EngineEvent]) -> None:
        self._outbox.extend((seq.stream, event) for event in events)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "the GPU ran out of memory"
    return f"the model failed ({type(exc).__name__})"


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
