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
import email.utils
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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
    TextDelta,
)

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_FINISH_REASONS = {
    "stop": FinishReason.EOS,
    "eos": FinishReason.EOS,
    "end_turn": FinishReason.EOS,
    "tool_calls": FinishReason.EOS,
    "function_call": FinishReason.EOS,
    "length": FinishReason.LENGTH,
}
_MAX_LOGGED_CHARS = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries before the first token: after a connection error, a 429 or a 5xx."""

    max_attempts: int = 4
    first_delay: float = 1.0  # doubled after each failed attempt
    max_delay: float = 60.0  # a longer Retry-After is not waited for: the request fails

    def delay(self, num_failed: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self.first_delay * 2 ** (num_failed - 1), self.max_delay)


class ReasoningForm:
    """Server deltas -> the inline text form `<think>reasoning</think>answer` (module docstring)."""

    def __init__(self) -> None:
        self._state = "start"  # start | reasoning (we opened <think>) | answer | inline

    def push(self, reasoning: str, content: str) -> str:
        """The text to pass on for one delta's reasoning and content fields."""
        parts: list[str] = []
        if reasoning:
            if self._state == "start":
                parts.append("<think>")
                self._state = "reasoning"
            if self._state == "reasoning":
                parts.append(reasoning)
            # Reasoning after the answer began has nowhere to go in the inline form: dropped.
        if content:
            if self._state == "reasoning":
                parts.append("</think>")
                self._state = "answer"
            elif self._state == "start":
                self._state = "inline"
            parts.append(content)
        return "".join(parts)


class _Secret:
    """A value kept out of every repr (so no dump of the engine's state shows the key)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class _Retry(Exception):
    """A failure before the first token that another attempt may not have."""

    def __init__(self, user_text: str, retry_after: float | None = None) -> None:
        super().__init__(user_text)
        self.user_text = user_text
        self.retry_after = retry_after


class _Failed(Exception):
    """The request failed for good: `user_text` is shown to the user."""

    def __init__(self, user_text: str) -> None:
        super().__init__(user_text)
        self.user_text = user_text


@dataclass(eq=False)
class _Job:
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
    first_token_at: float | None = None
    num_chunks: int = 0  # deltas with text: the token count when the server sends no usage
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None

    def emit(self, event: EngineEvent) -> None:
        self.stream._put(event)


class _RemoteStream:
    """The events of one request; it ends after Finished."""

    def __init__(self, engine: OpenAIEngine) -> None:
        self._engine = engine
        self._events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._is_done = False
        self._job: _Job | None = None

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
        if self._job is not None:
            self._engine._end(self._job, FinishReason.CANCELLED)

    async def aclose(self) -> None:
        self.cancel()

    def _put(self, event: EngineEvent) -> None:
        self._events.put_nowait(event)


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

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEngine:
        remote = settings.openai
        return cls(
            remote.base_url,
            model=remote.model,
            api_key=remote.api_key,
            max_concurrency=remote.max_concurrency,
            max_queue=settings.engine.max_queue,
            max_context_tokens=settings.model.max_context_tokens,
            connect_timeout=remote.connect_timeout,
            read_timeout=remote.read_timeout,
        )

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
            await self._check_server(client)
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
        job = _Job(request, stream, now, now + request.params.timeout_seconds)
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

    async def _check_server(self, client: httpx.AsyncClient) -> None:
        """GET /models: the server is there, takes our key, and serves the model."""
        where = f"[openai] base_url {_without_credentials(self._base_url)}"
        try:
            response = await client.get("models")
        except httpx.TimeoutException:
            raise EngineError(f"{where}: the server did not answer in time") from None
        except httpx.TransportError as exc:
            raise EngineError(f"{where}: cannot connect ({_describe_transport(exc)})") from None
        status = response.status_code
        if status in (401, 403):
            raise EngineError(
                f"{where}: the server refused the API key (HTTP {status}); set [openai] api_key "
                "or the OPENAI_API_KEY environment variable"
            )
        if status == 404:
            raise EngineError(
                f"{where}: no OpenAI-compatible API there (GET /models answered 404); the root "
                "usually ends in /v1"
            )
        if status != 200:
            raise EngineError(f"{where}: GET /models answered HTTP {status}")
        try:
            entries = [m for m in response.json()["data"] if isinstance(m.get("id"), str)]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EngineError(f"{where}: GET /models did not answer with a model list") from None
        if not entries:
            raise EngineError(f"{where}: the server lists no models")
        ids = [entry["id"] for entry in entries]
        if not self._model:
            self._model = ids[0]
        elif self._model not in ids:
            shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
            raise EngineError(
                f"[openai] model {self._model!r} is not served at "
                f"{_without_credentials(self._base_url)} (it lists: {shown})"
            )
        entry = entries[ids.index(self._model)]
        for key in ("max_model_len", "context_length"):  # vLLM's, OpenRouter's
            length = entry.get(key)
            if isinstance(length, int) and length > 0:
                self._max_sequence_tokens = min(self._max_sequence_tokens, length)
                break

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
        except _Failed as failure:
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
        now = asyncio.get_running_loop().time()
        num_prompt = job.usage_prompt_tokens or len(job.request.prompt_ids)
        job.emit(
            Finished(
                reason=reason,
                num_prompt_tokens=num_prompt,
                num_generated_tokens=(
                    job.num_chunks
                    if job.usage_completion_tokens is None
                    else job.usage_completion_tokens
                ),
                queued_seconds=(job.started_at or now) - job.submitted_at,
                first_token_seconds=None
                if job.first_token_at is None
                else job.first_token_at - job.submitted_at,
                total_seconds=now - job.submitted_at,
                error=error,
            )
        )

    async def _generate(self, job: _Job) -> FinishReason:
        """Stream the answer; retry what failed before the first token (bounded backoff)."""
        payload = self._payload(job.request)
        num_failed = 0
        while True:
            try:
                return await self._stream_once(job, payload)
            except _Retry as failure:
                num_failed += 1
                delay = self._retry.delay(num_failed, failure.retry_after)
                if num_failed >= self._retry.max_attempts or delay > self._retry.max_delay:
                    raise _Failed(failure.user_text) from None
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
                    await self._refuse(response)
                self._mark_up()
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    raise _Failed("the model server did not stream its answer")
                return await self._read_events(job, EventSource(response))
        except httpx.TimeoutException:
            # Up, or busy with other answers: either way not a reason to report it down.
            raise _Failed("the model server did not answer in time") from None
        except httpx.TransportError as exc:
            self._mark_down()
            if job.first_token_at is None:
                raise _Retry(
                    f"cannot reach the model server ({_describe_transport(exc)})"
                ) from None
            raise _Failed("the connection to the model server was lost") from None

    async def _refuse(self, response: httpx.Response) -> None:
        """A non-200 answer: retry (429, 5xx) or fail."""
        status = response.status_code
        await response.aread()
        message = _server_message(response.content, self._api_key.value)
        if status in _RETRY_STATUSES:
            if status == 429:  # busy, but there
                self._mark_up()
            else:
                self._mark_down()
            text = "the model server is busy" if status == 429 else "the model server failed"
            raise _Retry(f"{text} (HTTP {status})", _retry_after(response))
        log.warning("openai request refused: HTTP %d %s", status, message)
        if status in (401, 403):
            raise _Failed(f"the model server refused the API key (HTTP {status})")
        raise _Failed(f"the model server refused the request (HTTP {status})")

    async def _read_events(self, job: _Job, events: EventSource) -> FinishReason:
        form = ReasoningForm()
        finish: str | None = None
        stop_reason: object = None
        is_done = False
        loop = asyncio.get_running_loop()
        async for event in events.aiter_sse():
            if event.data == "[DONE]":
                is_done = True
                break
            try:
                data = json.loads(event.data)
            except ValueError:
                raise _Failed("the model server sent a malformed answer") from None
            if not isinstance(data, dict):
                continue
            if event.event == "error" or "error" in data or data.get("object") == "error":
                self._fail_on_error_event(job, data)
            usage = data.get("usage")
            if isinstance(usage, dict):
                job.usage_prompt_tokens = _count(usage.get("prompt_tokens"))
                job.usage_completion_tokens = _count(usage.get("completion_tokens"))
            for choice in data.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                content = delta.get("content") or ""
                text = form.push(_text(reasoning), _text(content))
                if text:
                    job.num_chunks += 1
                    if job.first_token_at is None:
                        job.first_token_at = loop.time()
                    job.emit(TextDelta(text))
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
                    stop_reason = choice.get("stop_reason")
        if finish is None:
            if is_done:
                return FinishReason.EOS  # [DONE] without a finish_reason: some servers do this
            if job.first_token_at is None:
                raise _Retry("the model server closed the stream before answering")
            raise _Failed("the connection to the model server was lost")
        return self._finish_reason(job, finish, stop_reason)

    def _fail_on_error_event(self, job: _Job, data: dict[str, Any]) -> None:
        """An error sent inside the stream (vLLM, SGLang, OpenRouter do this mid-answer)."""
        error = data.get("error") if isinstance(data.get("error"), dict) else data
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) else None
        log.warning(
            "openai stream error: %s",
            _server_message(json.dumps(data).encode(), self._api_key.value),
        )
        if job.first_token_at is None and status in _RETRY_STATUSES:
            raise _Retry(f"the model server failed (error {status})")
        raise _Failed("the model server failed while answering")

    @staticmethod
    def _finish_reason(job: _Job, finish: str, stop_reason: object) -> FinishReason:
        if finish == "stop" and isinstance(stop_reason, str) and stop_reason:
            return FinishReason.STOP  # vLLM names the stop string that matched
        reason = _FINISH_REASONS.get(finish)
        if reason is not None:
            return reason
        if finish == "content_filter":
            raise _Failed("the model server's content filter stopped the answer")
        raise _Failed("the model server ended the answer unexpectedly")


def build_openai_engine(settings: Settings) -> tuple[Any | None, OpenAIEngine]:
    """The tokenizer (None if it cannot be loaded) and an OpenAIEngine; loads no weights.

    Blocking (the tokenizer loads from disk or the hub): run it in a thread. Same shape as the
    local engine's factory, so the app picks either by `[engine] backend`.
    """
    return load_tokenizer_or_none(settings), OpenAIEngine.from_settings(settings)


def load_tokenizer_or_none(settings: Settings) -> Any | None:
    """`[model] path`'s tokenizer for trimming dialogues; None (said once) when unavailable."""
    from transformers import AutoTokenizer

    model = settings.model
    try:
        return AutoTokenizer.from_pretrained(model.path, local_files_only=model.local_files_only)
    except Exception as exc:  # no such folder, no hub access, a broken file: all the same here
        log.warning(
            "cannot load the tokenizer of %s (%s); dialogues are trimmed by an estimate of "
            "3 characters a token",
            model.path,
            _first_line(exc),
        )
        return None


# ---- helpers ---------------------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), if the server sent one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _server_message(body: bytes, api_key: str) -> str:
    """The server's error text for the log: one short line, never our key."""
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        text = error.get("message", "") if isinstance(error, dict) else str(error)
    except ValueError:
        text = body.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    if api_key:
        text = text.replace(api_key, "<api key>")
    return text[:_MAX_LOGGED_CHARS]


def _without_credentials(url: str) -> str:
    """`url` without a user:password@ part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _describe_transport(exc: httpx.TransportError) -> str:
    return type(exc).__name__


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
