"""OpenAIEngine: answers come from an OpenAI-compatible chat-completions server.

vLLM, SGLang, TGI, llama.cpp's server, Ollama, LM Studio and hosted APIs (DeepSeek's,
OpenRouter) all stream `POST {base_url}/chat/completions` as server-sent events. Each request
is one such stream; at most `max_concurrency` are open at once and the rest wait in our queue,
told their position, like the local engine's.

Reasoning arrives in one of three forms, which this engine turns into the one inline form the
chat core's ReasoningSplitter reads (the local engine's output: reasoning, `</think>`, answer):
  * separately, in the delta field `reasoning_content` (DeepSeek's API, vLLM and SGLang with a
    reasoning parser, llama.cpp) or `reasoning` (OpenRouter, newer vLLM, Ollama): sent on as
    `<think>` + reasoning, then `</think>` before the first content;
  * inline in `content` as `<think>…</think>` (a server without a reasoning parser whose
    template does not open `<think>` itself): passed through unchanged;
  * content only, neither a reasoning field nor a leading `<think>`. Two kinds of server send
    this: one without a reasoning parser whose chat template already opened `<think>` (R1's
    does), so the content is reasoning until a `</think>` in it; and one serving a model that
    does not reason, so the content is all answer. Nothing in the stream tells them apart
    before a `</think>` does or does not come, so the content is passed through unchanged and
    the splitter's `starts_in_reasoning` (whether the model's template opens `<think>`: true for
    R1, and assumed when no tokenizer is loaded) decides, exactly as it does for the local
    engine's output of the same text. For a model that does not reason, point `[model] path`
    at its own tokenizer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from bot.engine.base import (
    EngineBusy,
    EngineError,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    Queued,
    Started,
)
from bot.engine.openai_wire import (
    RETRY_STATUSES,
    RequestFailed,
    RetryLater,
    RetryPolicy,
    StreamProgress,
    check_models,
    describe_transport,
    read_events,
    refusal,
)
from bot.streams import EventQueue

log = logging.getLogger(__name__)


class _Secret:
    """A value kept out of every repr (so no dump of the engine's state shows the key)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


@dataclass(eq=False, kw_only=True)
class _Job(StreamProgress):
    """One request's state, from submit to Finished."""

    request: GenerationRequest
    stream: _RemoteStream
    submitted_at: float  # loop time
    deadline: float  # loop time
    task: asyncio.Task[None] | None = None
    admitted: asyncio.Event = field(default_factory=asyncio.Event)
    has_slot: bool = False
    reported_position: int = 0
    ending: FinishReason | None = None  # why we cancelled its task: CANCELLED or SHUTDOWN
    is_finished: bool = False  # Finished was sent
    started_at: float | None = None

    def emit(self, event: EngineEvent) -> None:
        self.stream.put(event)

    def finished(self, reason: FinishReason, error: str | None, now: float) -> Finished:
        """The stream's last event, with the server's token counts where it sent them."""
        return Finished(
            reason=reason,
            num_prompt_tokens=self.usage_prompt_tokens or len(self.request.prompt_ids),
            num_generated_tokens=(
                self.num_chunks
                if self.usage_completion_tokens is None
                else self.usage_completion_tokens
            ),
            queued_seconds=(self.started_at or now) - self.submitted_at,
            first_token_seconds=None
            if self.first_token_at is None
            else self.first_token_at - self.submitted_at,
            total_seconds=now - self.submitted_at,
            error=error,
        )


class _RemoteStream(EventQueue[EngineEvent]):
    """The events of one request; it ends after Finished."""

    def __init__(self, engine: OpenAIEngine) -> None:
        super().__init__(lambda event: isinstance(event, Finished))
        self._engine = engine
        self._job: _Job | None = None

    def cancel(self) -> None:
        if self._job is not None:
            self._engine._end(self._job, FinishReason.CANCELLED)

    async def aclose(self) -> None:
        self.cancel()


class OpenAIEngine:
    """The Engine interface over an OpenAI-compatible streaming chat-completions server."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key: str = "",
        max_concurrency: int = 64,
        max_queue: int = 256,
        max_context_tokens: int = 16384,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        probe_interval: float = 15.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._model = model
        self._api_key = _Secret(api_key)
        self._max_concurrency = max_concurrency
        self._max_queue = max_queue
        self._max_sequence_tokens = max_context_tokens
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep  # injectable: tests see the backoff without waiting for it
        self._client: httpx.AsyncClient | None = None
        self._waiting: collections.deque[_Job] = collections.deque()
        self._running: set[_Job] = set()
        self._jobs: set[_Job] = set()
        self._refusal: str | None = "the engine is not running"
        self._never_broken: asyncio.Future[str] | None = None
        self._is_up = False
        self._probe_interval = probe_interval
        self._probe: asyncio.Task[None] | None = None  # asks GET /models while the server is down

    # ---- the Engine interface ----------------------------------------------------------

    @property
    def max_sequence_tokens(self) -> int:
        """The server's context length when it tells it (vLLM does), else the configured one."""
        return self._max_sequence_tokens

    @property
    def max_batch_size(self) -> int:
        return self._max_concurrency

    @property
    def model(self) -> str:
        """The model asked for (after start-up: the configured one or the server's first)."""
        return self._model

    @property
    def num_waiting(self) -> int:
        """Requests in our queue (for the queue-depth gauge)."""
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        """Streams open to the server (for the active-generations gauge)."""
        return len(self._running)

    @property
    def is_up(self) -> bool:
        """Whether the server answered the last time it was asked (for /healthz).

        After a failure it is asked again every `probe_interval` seconds until it answers, so
        this turns true again without waiting for a user's message.
        """
        return self._is_up and self._client is not None

    async def __aenter__(self) -> OpenAIEngine:
        key = self._api_key.value
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(
            max_connections=self._max_concurrency + 4,
            max_keepalive_connections=self._max_concurrency,
        )
        client = httpx.AsyncClient(
            base_url=self._base_url + "/", headers=headers, timeout=self._timeout, limits=limits
        )
        try:
            self._model, self._max_sequence_tokens = await check_models(
                client, self._base_url, self._model, self._max_sequence_tokens
            )
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._never_broken = asyncio.get_running_loop().create_future()
        self._refusal = None
        self._is_up = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is None:
            return
        self._refusal = "the engine is shutting down"
        if self._probe is not None:
            self._probe.cancel()
        jobs = list(self._jobs)
        for job in jobs:
            self._end(job, FinishReason.SHUTDOWN)
        await asyncio.gather(*(job.task for job in jobs if job.task), return_exceptions=True)
        await self._client.aclose()
        self._client = None

    def submit(self, request: GenerationRequest) -> _RemoteStream:
        if self._refusal is not None:
            raise EngineError(self._refusal)
        if not request.messages:
            raise EngineError("the request has no messages")
        if len(self._waiting) >= self._max_queue:
            raise EngineBusy("too many requests are waiting; try again in a minute")
        loop = asyncio.get_running_loop()
        now = loop.time()
        stream = _RemoteStream(self)
        job = _Job(
            request=request,
            stream=stream,
            submitted_at=now,
            deadline=now + request.params.timeout_seconds,
        )
        stream._job = job
        self._jobs.add(job)
        if len(self._running) < self._max_concurrency and not self._waiting:
            self._grant(job)
        else:
            self._waiting.append(job)
            self._report_positions()
        job.task = loop.create_task(self._serve(job), name=f"openai request {request.request_id}")
        job.task.add_done_callback(lambda task: self._task_done(job, task))
        return stream

    async def wait_broken(self) -> str:
        """Never returns: a server that fails fails requests, which are retried or end with
        ERROR; the bot keeps running and answers again once the server is back."""
        if self._never_broken is None:
            raise EngineError("the engine is not running")
        return await asyncio.shield(self._never_broken)

    # ---- start-up ----------------------------------------------------------------------

    def _note_refusal(self, status: int) -> None:
        """A 429 says the server is there (busy); a 5xx that it is not well."""
        if status == 429:
            self._mark_up()
        elif status in RETRY_STATUSES:
            self._mark_down()

    def _mark_up(self) -> None:
        self._is_up = True

    def _mark_down(self) -> None:
        self._is_up = False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        while self._client is not None and not self._is_up:
            await asyncio.sleep(self._probe_interval)
            if self._client is None:
                return
            try:
                response = await self._client.get("models")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                self._is_up = True

    # ---- the queue ---------------------------------------------------------------------

    def _grant(self, job: _Job) -> None:
        job.has_slot = True
        self._running.add(job)
        job.admitted.set()

    def _release(self, job: _Job) -> None:
        """Give job's place (a stream or a place in line) to the next in line."""
        self._jobs.discard(job)
        if job.has_slot:
            job.has_slot = False
            self._running.discard(job)
        elif job in self._waiting:
            self._waiting.remove(job)
        while self._waiting and len(self._running) < self._max_concurrency:
            self._grant(self._waiting.popleft())
        self._report_positions()

    def _report_positions(self) -> None:
        for position, job in enumerate(self._waiting, start=1):
            if job.reported_position != position:
                job.reported_position = position
                job.emit(Queued(position))

    def _end(self, job: _Job, reason: FinishReason) -> None:
        """Stop a job from outside (cancel, shutdown): its task ends the stream with `reason`."""
        if job.ending is None and job.task is not None and not job.task.done():
            job.ending = reason
            # Cancelling the task leaves the `async with` around the HTTP response, which
            # closes the connection at once: the server sees it and frees the GPU work.
            job.task.cancel()

    # ---- one request -------------------------------------------------------------------

    async def _serve(self, job: _Job) -> None:
        """Wait for a place, stream the answer, and end the stream with exactly one Finished."""
        loop = asyncio.get_running_loop()
        reason, error = FinishReason.ERROR, None
        try:
            async with asyncio.timeout_at(job.deadline):
                await job.admitted.wait()
                job.started_at = loop.time()
                job.emit(Started(num_prompt_tokens=len(job.request.prompt_ids)))
                reason = await self._generate(job)
        except TimeoutError:
            reason = FinishReason.TIMEOUT
        except asyncio.CancelledError:
            if job.ending is None:
                raise  # not ours (the loop is going away): _task_done ends the stream
            reason = job.ending
        except RequestFailed as failure:
            reason, error = FinishReason.ERROR, failure.user_text
        except Exception:
            log.exception("openai request failed")
            reason, error = FinishReason.ERROR, "an internal error"
        self._release(job)
        self._finish(job, reason, error)

    def _task_done(self, job: _Job, task: asyncio.Task[None]) -> None:
        """Every stream ends, also when its task was cancelled before it ever ran."""
        if not job.is_finished:
            self._release(job)
            self._finish(job, job.ending or FinishReason.SHUTDOWN, None)

    def _finish(self, job: _Job, reason: FinishReason, error: str | None) -> None:
        job.is_finished = True
        job.emit(job.finished(reason, error, asyncio.get_running_loop().time()))

    async def _generate(self, job: _Job) -> FinishReason:
        """Stream the answer; retry what failed before the first token (bounded backoff)."""
        payload = self._payload(job.request)
        num_failed = 0
        while True:
            try:
                return await self._stream_once(job, payload)
            except RetryLater as failure:
                num_failed += 1
                delay = self._retry.delay(num_failed, failure.retry_after)
                if num_failed >= self._retry.max_attempts or delay > self._retry.max_delay:
                    raise RequestFailed(failure.user_text) from None
                log.debug("openai request: %s; retrying in %.1f s", failure.user_text, delay)
                await self._sleep(delay)

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        return payload

    async def _stream_once(self, job: _Job, payload: dict[str, Any]) -> FinishReason:
        """One attempt: POST and read the events. Raises _Retry only before the first token."""
        assert self._client is not None
        try:
            async with self._client.stream(
                "POST",
                "chat/completions",
                json=payload,
                headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._note_refusal(response.status_code)
                    raise refusal(response, self._api_key.value)
                self._mark_up()
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    raise RequestFailed("the model server did not stream its answer")
                return await read_events(job, EventSource(response), self._api_key.value)
        except httpx.TimeoutException:
            # Up, or busy with other answers: either way not a reason to report it down.
            raise RequestFailed("the model server did not answer in time") from None
        except httpx.TransportError as exc:
            self._mark_down()
            if job.first_token_at is None:
                raise RetryLater(
                    f"cannot reach the model server ({describe_transport(exc)})"
                ) from None
            raise RequestFailed("the connection to the model server was lost") from None
