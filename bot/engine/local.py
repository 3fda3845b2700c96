"""LocalEngine: the asyncio facade of the GPU worker thread (bot/engine/worker.py).

Requests go in through a thread-safe inbox; each request's events come back to the event loop
with `call_soon_threadsafe`, one batch per worker iteration, into that request's own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from bot.engine.base import (
    EngineBusy,
    EngineError,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
)
from bot.engine.cache import ReuseStats, SlotTable
from bot.engine.runner import ModelRunner
from bot.engine.scheduler import PREFILL_TOKENS_PER_ITERATION, Scheduler
from bot.engine.worker import Cancel, InboxMessage, Stop, Submit, Worker
from bot.streams import EventQueue

log = logging.getLogger(__name__)


class _Stream(EventQueue[EngineEvent]):
    """The asyncio side of one request: events arrive via call_soon_threadsafe."""

    def __init__(self, engine: LocalEngine, request_id: int) -> None:
        super().__init__(lambda event: isinstance(event, Finished))
        self._engine = engine
        self._request_id = request_id

    def cancel(self) -> None:
        if not self.is_done:
            self._engine.cancel(self._request_id)

    async def aclose(self) -> None:
        self.cancel()


class LocalEngine:
    """Serves a loaded model from a single worker thread (continuous batching, CUDA graphs)."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        *,
        eos_token_ids: Iterable[int],
        max_queue: int = 256,
        warm_up: bool = True,
        prefix_reuse: bool = True,
        prefill_tokens: int = PREFILL_TOKENS_PER_ITERATION,
    ) -> None:
        self._runner = runner
        self._max_queue = max_queue
        self._do_warm_up = warm_up
        self._slots = SlotTable(runner.cache_shape.num_slots, reuse=prefix_reuse)
        self._inbox: queue.SimpleQueue[InboxMessage] = queue.SimpleQueue()
        # Fast tokenizers are not promised to be thread-safe: the worker decodes with its own.
        self._worker = Worker(
            runner,
            Scheduler(
                self._slots,
                slot_tokens=runner.cache_shape.slot_tokens,
                prefill_tokens=prefill_tokens,
            ),
            copy.deepcopy(tokenizer),
            eos_token_ids=frozenset(eos_token_ids),
            inbox=self._inbox,
            on_dequeued=self._dequeued,
        )
        self._ids = itertools.count(1)
        self._pending_lock = threading.Lock()
        self._num_pending = 0  # submitted but not yet running: bounded by max_queue
        # Why submit() refuses new requests, once __aexit__ began or the worker crashed: the
        # worker may already have ended its last streams, so a request accepted now would never
        # get its Finished. Set and read under _pending_lock, with the inbox put in submit().
        self._refusal: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._broken: asyncio.Future[str] | None = None  # set if the worker crashes

    @property
    def max_sequence_tokens(self) -> int:
        """The longest prompt + answer one request can have."""
        return self._runner.cache_shape.slot_tokens

    @property
    def max_batch_size(self) -> int:
        return self._runner.cache_shape.num_slots

    @property
    def num_waiting(self) -> int:
        return self._num_pending

    @property
    def num_running(self) -> int:
        # Read from the event loop while the worker changes it: a snapshot is all a gauge needs.
        return self.max_batch_size - self._slots.num_free

    @property
    def is_up(self) -> bool:
        return self._thread is not None and self._refusal is None

    @property
    def reuse_stats(self) -> ReuseStats:
        """Prefix-reuse counts so far (read from any thread; a snapshot, not a lock)."""
        return self._slots.stats

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
        self._inbox.put(Stop())
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
            self._inbox.put(Submit(request_id, request, stream, time.monotonic()))
        return stream

    def cancel(self, request_id: int) -> None:
        """Ask the worker to end a request (its stream then ends with CANCELLED)."""
        self._inbox.put(Cancel(request_id))

    # ---- the worker thread ---------------------------------------------------------------

    def _dequeued(self) -> None:
        with self._pending_lock:
            self._num_pending -= 1

    def _thread_main(self) -> None:
        try:
            if self._do_warm_up:
                seconds = self._runner.warm_up()
                if self._runner.uses_graphs:
                    log.info("engine warm-up (CUDA graph capture) took %.1f s", seconds)
        except Exception as exc:
            log.exception("engine warm-up failed")
            self._settle(self._ready, EngineError(f"engine warm-up failed: {exc}"))
            return
        self._settle(self._ready, None)
        reason, error = FinishReason.SHUTDOWN, None
        assert self._loop is not None
        try:
            self._worker.run(self._loop, _deliver)
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
            self._worker.end_everything(reason, error)
            self._worker.flush()

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


def _deliver(batch: list[tuple[_Stream, EngineEvent]]) -> None:
    for stream, event in batch:
        stream.put(event)
