"""LocalEngine: one worker thread owns the model and serves every request with continuous batching.

Requests arrive through a thread-safe inbox; each iteration of the worker loop
  1. takes in new requests and cancellations, expires deadlines,
  2. prefills waiting prompts (a bounded number of tokens per iteration, so decoding never stalls
     for long) into free KV slots,
  3. runs one decode step for every active request together,
  4. turns the new tokens into text and hands the events to the event loop in one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from bot.engine.base import (
    EngineBusy,
    EngineError,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    Queued,
    Started,
    TextDelta,
)
from bot.engine.detokenizer import IncrementalDetokenizer
from bot.engine.runner import ModelRunner, PrefillChunk
from bot.engine.scheduler import WaitingQueue
from bot.engine.stops import StopMatcher

log = logging.getLogger(__name__)

_PREFILL_TOKENS_PER_ITERATION = 2048
_IDLE_WAIT_SECONDS = 0.5


class _Stream:
    """The asyncio side of one request: events arrive via call_soon_threadsafe."""

    def __init__(self, engine: LocalEngine, request_id: int) -> None:
        self._engine = engine
        self._request_id = request_id
        self._events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._is_done = False

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._is_done:
            raise StopAsyncIteration
        event = await self._events.get()
        if isinstance(event, Finished):
            self._is_done = True
        return event

    def cancel(self) -> None:
        if not self._is_done:
            self._engine._cancel(self._request_id)

    async def aclose(self) -> None:
        self.cancel()

    def _put(self, event: EngineEvent) -> None:
        self._events.put_nowait(event)


@dataclass(eq=False)
class _Sequence:
    """Worker-thread state of one request."""

    request_id: int
    request: GenerationRequest
    stream: _Stream
    submitted_at: float
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    slot: int = -1
    num_prefilled: int = 0
    num_generated: int = 0
    started_at: float | None = None
    first_token_at: float | None = None
    reported_position: int = 0
    finish: FinishReason | None = None
    error: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return self.request.owner

    @property
    def num_prompt(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def deadline(self) -> float:
        return self.submitted_at + self.request.params.timeout_seconds

    @property
    def next_position(self) -> int:
        """Where the KV of the next decode input goes."""
        return self.num_prompt + self.num_generated - 1


class LocalEngine:
    """Serves a loaded model from a single worker thread; see the module docstring."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: object,
        *,
        eos_token_ids: Iterable[int],
        max_queue: int = 256,
        warm_up: bool = True,
    ) -> None:
        self._runner = runner
        self._tokenizer = tokenizer
        self._eos = frozenset(eos_token_ids)
        self._max_queue = max_queue
        self._do_warm_up = warm_up
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._pending_lock = threading.Lock()
        self._num_pending = 0  # submitted but not yet running: bounded by max_queue
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._broken: asyncio.Future[str] | None = None  # set if the worker crashes
        # Why submit() refuses new requests, once __aexit__ began or the worker crashed: the
        # worker may already have ended its last streams, so a request accepted now would never
        # get its Finished. Set and read under _pending_lock, with the inbox put in submit().
        self._refusal: str | None = None
        # Worker-thread state:
        self._waiting: WaitingQueue[_Sequence] = WaitingQueue(lambda seq: seq.owner)
        self._slots: list[_Sequence] = []  # index == KV slot; decoding ones first
        self._num_decoding = 0
        self._by_id: dict[int, _Sequence] = {}
        self._outbox: list[tuple[_Stream, EngineEvent]] = []
        self._stopping = False

    # ---- asyncio side ------------------------------------------------------------------

    @property
    def max_sequence_tokens(self) -> int:
        """The longest prompt + answer one request can have."""
        return self._runner.cache_shape.slot_tokens

    @property
    def max_batch_size(self) -> int:
        return self._runner.cache_shape.num_slots

    async def __aenter__(self) -> LocalEngine:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._broken = self._loop.create_future()
        self._thread = threading.Thread(target=self._thread_main, name="gpu-worker", daemon=True)
        self._thread.start()
        await self._ready
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        with self._pending_lock:
            self._refusal = self._refusal or "the engine is shutting down"
        self._inbox.put(("stop", None))
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        # Deliver what the worker sent last (the SHUTDOWN events) before returning.
        await asyncio.sleep(0)

    async def wait_broken(self) -> str:
        if self._broken is None:
            raise EngineError("the engine is not running")
        return await asyncio.shield(self._broken)

    def submit(self, request: GenerationRequest) -> _Stream:
        if self._thread is None or self._loop is None:
            raise EngineError("the engine is not running")
        if not request.prompt_ids:
            raise EngineError("empty prompt")
        if len(request.prompt_ids) >= self.max_sequence_tokens:
            raise EngineError(
                f"prompt of {len(request.prompt_ids)} tokens does not fit the engine's "
                f"{self.max_sequence_tokens}-token sequences"
            )
        request_id = next(self._ids)
        stream = _Stream(self, request_id)
        with self._pending_lock:
            if self._refusal is not None:
                raise EngineError(self._refusal)
            if self._num_pending >= self._max_queue:
                raise EngineBusy("too many requests are waiting; try again in a minute")
            self._num_pending += 1
            self._inbox.put(("submit", (request_id, request, stream, time.monotonic())))
        return stream

    def _cancel(self, request_id: int) -> None:
        self._inbox.put(("cancel", request_id))

    def _deliver(self, batch: list[tuple[_Stream, EngineEvent]]) -> None:
        for stream, event in batch:
            stream._put(event)

    # ---- worker thread -----------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            if self._do_warm_up:
                seconds = self._runner.warm_up()
                log.info("engine warm-up (CUDA graph capture) took %.1f s", seconds)
        except Exception as exc:
            log.exception("engine warm-up failed")
            self._settle(self._ready, EngineError(f"engine warm-up failed: {exc}"))
            return
        self._settle(self._ready, None)
        reason, error = FinishReason.SHUTDOWN, None
        try:
            self._serve()
        except Exception:
            # A bug of ours, not a failing request (those end with ERROR and the loop goes on).
            # Without a worker nothing can be served: refuse new requests instead of queueing
            # them forever, and end the ones in hand.
            log.critical("engine worker crashed; no more requests can be served", exc_info=True)
            reason, error = FinishReason.ERROR, "the engine stopped after an internal error"
            self._settle(self._broken, error)
        finally:
            with self._pending_lock:
                self._refusal = self._refusal or error or "the engine is shutting down"
            self._end_everything(reason, error)
            self._flush_outbox()

    def _settle(self, future: asyncio.Future[Any] | None, result: object) -> None:
        """From the worker thread: give `future` its result (an exception is raised to its
        awaiter), unless it has one already."""
        assert self._loop is not None and future is not None

        def settle() -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    def _serve(self) -> None:
        while not self._stopping:
            is_idle = not self._slots and not len(self._waiting)
            self._take_inbox(block=is_idle)
            if self._stopping:
                break
            self._expire(time.monotonic())
            self._prefill_some()
            if self._num_decoding:
                self._decode_once()
            self._report_positions()
            self._flush_outbox()

    def _take_inbox(self, *, block: bool) -> None:
        try:
            kind, payload = (
                self._inbox.get(timeout=_IDLE_WAIT_SECONDS) if block else self._inbox.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            self._handle_message(kind, payload)
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle_message(self, kind: str, payload: object) -> None:
        if kind == "stop":
            self._stopping = True
        elif kind == "submit":
            request_id, request, stream, submitted_at = payload  # type: ignore[misc]
            seq = _Sequence(
                request_id=request_id,
                request=request,
                stream=stream,
                submitted_at=submitted_at,
                detokenizer=IncrementalDetokenizer(self._tokenizer),
                stops=StopMatcher(request.params.stop),
            )
            self._by_id[request_id] = seq
            self._waiting.append(seq)
        elif kind == "cancel":
            seq = self._by_id.get(payload)  # type: ignore[arg-type]
            if seq is not None:
                self._finish(seq, FinishReason.CANCELLED)

    def _expire(self, now: float) -> None:
        for seq in [*self._waiting, *self._slots]:
            if now >= seq.deadline:
                self._finish(seq, FinishReason.TIMEOUT)

    # -- prefill

    def _busy_owners(self) -> set[str]:
        return {seq.owner for seq in self._slots if seq.owner}

    def _prefill_some(self) -> None:
        """Prefill up to a token budget of waiting prompts, packed into one forward pass."""
        budget = _PREFILL_TOKENS_PER_ITERATION
        batch: list[tuple[_Sequence, PrefillChunk]] = []
        seq = self._prefilling()
        while budget > 0:
            seq = seq or self._admit()
            if seq is None:
                break
            start = seq.num_prefilled
            chunk = seq.request.prompt_ids[start : start + budget]
            batch.append((seq, PrefillChunk(seq.slot, chunk, start)))
            budget -= len(chunk)
            if start + len(chunk) < seq.num_prompt:
                break  # a partial chunk is always the last: it stays the one prefilling slot
            seq = None
        if batch:
            self._prefill_batch(batch)

    def _prefilling(self) -> _Sequence | None:
        """The sequence whose prompt is partly cached (it sits right after the decoding ones)."""
        if len(self._slots) > self._num_decoding:
            return self._slots[self._num_decoding]
        return None

    def _admit(self) -> _Sequence | None:
        if len(self._slots) >= self._runner.cache_shape.num_slots:
            return None
        seq = self._waiting.pop_next(self._busy_owners())
        if seq is None:
            return None
        with self._pending_lock:
            self._num_pending -= 1
        seq.slot = len(self._slots)
        self._slots.append(seq)
        seq.started_at = time.monotonic()
        params = seq.request.params
        self._runner.set_sampling(seq.slot, params.temperature, params.top_p)
        self._emit(seq, Started(num_prompt_tokens=seq.num_prompt))
        return seq

    def _prefill_batch(self, batch: list[tuple[_Sequence, PrefillChunk]]) -> None:
        try:
            logits = self._runner.prefill_many([chunk for _, chunk in batch])
            done = []
            for row, (seq, chunk) in enumerate(batch):
                seq.num_prefilled += len(chunk.token_ids)
                if seq.num_prefilled >= seq.num_prompt:
                    done.append((row, seq))
            if not done:
                return
            rows = torch.tensor([row for row, _ in done], device=logits.device)
            tokens = self._runner.sample_rows(logits[rows], [seq.slot for _, seq in done])
            for (_, seq), token in zip(done, tokens, strict=True):
                self._runner.activate(seq.slot, token, seq.num_prompt)
            self._num_decoding += len(done)
        except Exception as exc:
            log.exception("prefill failed for %d requests", len(batch))
            for seq, _ in batch:
                self._fail(seq, exc)
            return
        # Completed prompts are now decoding, in slot order; their first tokens may end some.
        for (_, seq), token in zip(done, tokens.tolist(), strict=True):
            self._accept_token(seq, token)

    # -- decode

    def _decode_once(self) -> None:
        running = self._slots[: self._num_decoding]
        max_position = max(seq.next_position for seq in running)
        try:
            tokens = self._runner.decode(len(running), max_position).tolist()
        except Exception as exc:
            log.exception("decode step failed; failing %d requests", len(running))
            for seq in running:
                self._fail(seq, exc)
            return
        for seq, token in zip(running, tokens, strict=True):
            if seq.finish is None:
                self._accept_token(seq, token)

    def _accept_token(self, seq: _Sequence, token: int) -> None:
        now = time.monotonic()
        seq.num_generated += 1
        if seq.first_token_at is None:
            seq.first_token_at = now
        if token in self._eos:
            self._finish(seq, FinishReason.EOS)
            return
        text, is_stopped = seq.stops.push(seq.detokenizer.push(token))
        if text:
            self._emit(seq, TextDelta(text))
        params = seq.request.params
        if is_stopped:
            self._finish(seq, FinishReason.STOP)
        elif (
            seq.num_generated >= params.max_new_tokens
            or seq.next_position >= self._runner.cache_shape.slot_tokens
        ):
            self._finish(seq, FinishReason.LENGTH)

    # -- endings

    def _fail(self, seq: _Sequence, exc: BaseException) -> None:
        seq.error = _describe_error(exc)
        self._finish(seq, FinishReason.ERROR)

    def _finish(self, seq: _Sequence, reason: FinishReason) -> None:
        """End seq's stream and free its place (queue entry or KV slot)."""
        if seq.finish is not None:
            return
        self._end(seq, reason)
        if seq.slot == -1:
            self._waiting.remove(seq)
            with self._pending_lock:
                self._num_pending -= 1
        else:
            self._release_slot(seq)

    def _end(self, seq: _Sequence, reason: FinishReason) -> None:
        """Send seq's last text and its Finished event."""
        seq.finish = reason
        if reason not in (FinishReason.STOP, FinishReason.ERROR):
            # The held-back tail is real output once no stop string can complete.
            tail = seq.detokenizer.flush()
            text, _ = seq.stops.push(tail)
            text += seq.stops.flush()
            if text:
                self._emit(seq, TextDelta(text))
        now = time.monotonic()
        self._emit(
            seq,
            Finished(
                reason=reason,
                num_prompt_tokens=seq.num_prompt,
                num_generated_tokens=seq.num_generated,
                queued_seconds=(seq.started_at or now) - seq.submitted_at,
                first_token_seconds=None
                if seq.first_token_at is None
                else seq.first_token_at - seq.submitted_at,
                total_seconds=now - seq.submitted_at,
                error=seq.error,
            ),
        )
        self._by_id.pop(seq.request_id, None)

    def _release_slot(self, seq: _Sequence) -> None:
        """Free seq's slot, keeping decoding slots at 0..n-1 and a prefilling one right after."""
        hole = seq.slot
        if hole < self._num_decoding:
            last = self._num_decoding - 1
            if last != hole:
                self._move(self._slots[last], hole)
            self._num_decoding -= 1
            hole = last
        # Sequences still prefilling sit after the decoding ones: shift each down one place.
        for index in range(hole + 1, len(self._slots)):
            self._move(self._slots[index], index - 1)
        del self._slots[-1]
        self._runner.release(len(self._slots))
        seq.slot = -2  # finished; never reused

    def _move(self, seq: _Sequence, target: int) -> None:
        # One position more than certainly written: the current step may have added one.
        num_tokens = min(seq.num_prefilled + seq.num_generated + 1, self.max_sequence_tokens)
        self._runner.move_slot(seq.slot, target, num_tokens)
        self._slots[target] = seq
        seq.slot = target

    def _end_everything(self, reason: FinishReason, error: str | None) -> None:
        """The worker's last act: end every stream it holds or was sent.

        Nothing is freed on the way (the worker is leaving, and after a crash its bookkeeping
        may be what broke), so this cannot fail where _finish could.
        """
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "submit":
                self._handle_message(kind, payload)  # only queues it: it ends below
            elif kind == "cancel":
                seq = self._by_id.get(payload)  # type: ignore[arg-type]
                if seq is not None:
                    self._end(seq, FinishReason.CANCELLED)
        for seq in list(self._by_id.values()):
            if seq.finish is None:
                seq.error = seq.error or error
                self._end(seq, reason)

    # -- delivery

    def _report_positions(self) -> None:
        for seq, position in self._waiting.positions(self._busy_owners()):
            if position != seq.reported_position:
                seq.reported_position = position
                self._emit(seq, Queued(position))

    def _emit(self, seq: _Sequence, event: EngineEvent) -> None:
        self._outbox.append((seq.stream, event))

    def _flush_outbox(self) -> None:
        if not self._outbox or self._loop is None:
            return
        batch, self._outbox = self._outbox, []
        # A closed event loop raises RuntimeError: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, batch)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "the GPU ran out of memory"
    return f"the model failed ({type(exc).__name__})"
