"""A loopback fake of an OpenAI-compatible server (vLLM, SGLang, DeepSeek's API) over real HTTP.

It speaks what those servers send: `GET /v1/models`, and `POST /v1/chat/completions` streamed
as server-sent events (`data: {chunk}` lines, a finish chunk, a usage chunk with empty
`choices`, `data: [DONE]`), error bodies `{"error": {...}}`, `Retry-After` on 429. Each request
is answered by a script of steps, so a test can order things by events instead of by time::

    async with FakeOpenAI(api_key="sk-test") as server:
        server.script(answer_steps("Let me think.</think>\\n\\nHello!", form="reasoning_content"))
        ...  # the engine under test uses server.base_url
        await server.wait_for(lambda: server.num_disconnects == 1)

The default answer (no scripted one left) is `server.answer(body)`; replace it to answer
from the request. The server counts the streams open at once and sees a client disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from aiohttp import web

T = TypeVar("T")
Form = Literal["reasoning_content", "reasoning", "inline", "content"]

DEFAULT_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"
DEFAULT_SCRIPT = (
    "The user says hi; a short friendly answer will do.</think>\n\nHello! How can I help?"
)
_PIECE = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it: about one token


# -- the steps of one answer


@dataclass(frozen=True)
class Delta:
    """A chunk whose delta has these fields (`content`, `reasoning_content`, `reasoning`)."""

    fields: dict[str, str]


@dataclass(frozen=True)
class Finish:
    """The chunk with `finish_reason` (and vLLM's `stop_reason`)."""

    reason: str = "stop"
    stop_reason: str | int | None = None


@dataclass(frozen=True)
class Usage:
    """The usage chunk (`choices: []`), sent when the request asked for it."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Done:
    """`data: [DONE]`."""


@dataclass(frozen=True)
class Comment:
    """An SSE comment line (`: keep-alive`, as DeepSeek's API sends while busy)."""


@dataclass(frozen=True)
class ErrorEvent:
    """An error inside the stream, as vLLM and OpenRouter send one mid-answer."""

    message: str = "internal server error"
    code: int = 500


@dataclass(frozen=True)
class Cut:
    """Drop the connection mid-stream (a server that crashed or a proxy that timed out)."""


@dataclass(frozen=True)
class Hold:
    """Send nothing until `event` is set (or the client goes away)."""

    event: asyncio.Event


@dataclass(frozen=True)
class Refuse:
    """Answer the request with an HTTP error instead of a stream (must be the only step)."""

    status: int
    message: str = "refused"
    retry_after: str | None = None


Step = Delta | Finish | Usage | Done | Comment | ErrorEvent | Cut | Hold | Refuse


def pieces(text: str) -> list[str]:
    """`text` cut into word-sized pieces, as a server streams tokens."""
    return _PIECE.findall(text)


def answer_steps(
    script: str,
    *,
    form: Form = "reasoning_content",
    finish: str = "stop",
    usage: tuple[int, int] | None = None,
) -> list[Step]:
    """The stream for a model output `script` ("reasoning</think>answer"), as a server sends it.

    `form` is how the server shows the reasoning: in a delta field (a reasoning parser:
    vLLM/SGLang/DeepSeek `reasoning_content`, OpenRouter/newer vLLM `reasoning`), `inline`
    (the model opens <think> itself, e.g. Ollama's template: content is "<think>…</think>…"),
    or `content` (no parser, and the chat template opened <think>: the content starts inside it).
    """
    reasoning, closed, answer = script.partition("</think>")
    if not closed:  # no </think>: all reasoning (cut short) for a parser, raw content otherwise
        reasoning, answer = script, ""
    steps: list[Step] = []
    if form in ("reasoning_content", "reasoning"):
        steps += [Delta({form: piece}) for piece in pieces(reasoning)]
        steps += [Delta({"content": piece}) for piece in pieces(answer)]
    else:
        text = ("<think>\n" if form == "inline" else "") + script
        steps += [Delta({"content": piece}) for piece in pieces(text)]
    steps.append(Finish(finish))
    if usage is not None:
        steps.append(Usage(*usage))
    steps.append(Done())
    return steps


# -- the server


class FakeOpenAI:
    """An OpenAI-compatible API on 127.0.0.1, answering each completion with a script."""

    def __init__(
        self,
        *,
        api_key: str = "",
        models: Iterable[str] = (DEFAULT_MODEL,),
        max_model_len: int | None = 32768,
        models_status: int = 200,
    ) -> None:
        self.api_key = api_key
        self.models = list(models)
        self.max_model_len = max_model_len
        self.models_status = models_status  # anything but 200 refuses GET /models
        self.answer: Callable[[dict[str, Any]], list[Step]] = lambda body: answer_steps(
            DEFAULT_SCRIPT, usage=(len(json.dumps(body["messages"])) // 4, 20)
        )
        # Seconds to wait before each delta chunk, asked anew each time: a slow model (a test
        # can slow it mid-answer to act on it, as the front-end tests do with the local model).
        self.pace: Callable[[], float] = lambda: 0.0
        self.requests: list[dict[str, Any]] = []  # completion request bodies, in arrival order
        self.authorizations: list[str | None] = []  # the Authorization header of every call
        self.num_model_lists = 0  # GET /models calls
        self.num_open = 0  # completion streams open now
        self.max_open = 0  # ... and the most at once
        self.num_disconnects = 0  # streams the client closed before the server finished
        self.num_finished = 0  # streams the server ended itself (Done or the last step)
        self._scripts: deque[list[Step]] = deque()
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *answers: list[Step]) -> None:
        """Answer the next completion requests with these steps, in order."""
        self._scripts.extend(answers)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._completions)
        # handler_cancellation: a client that closes its stream cancels the handler, so the
        # server sees the disconnect at once, as vLLM does (and frees the GPU work).
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0) -> T:
        """Wait until predicate() is truthy (re-checked on every server event) and return it."""
        async with asyncio.timeout(timeout), self._changed:
            while not (value := predicate()):
                await self._changed.wait()
            return value

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- endpoints

    def _refused_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        self.authorizations.append(header)
        if self.api_key and header != f"Bearer {self.api_key}":
            given = (header or "").removeprefix("Bearer ")
            # What OpenAI answers: the key, masked (a client must not log even that).
            masked = f"{given[:3]}***{given[-4:]}" if len(given) > 8 else "***"
            return _error(401, f"Incorrect API key provided: {masked}.", "invalid_api_key")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        self.num_model_lists += 1
        await self._notify()
        refused = self._refused_auth(request)
        if refused is not None:
            return refused
        if self.models_status != 200:
            return _error(self.models_status, "not available here", "error")
        entries = []
        for name in self.models:
            entry: dict[str, Any] = {"id": name, "object": "model", "owned_by": "vllm"}
            if self.max_model_len is not None:
                entry["max_model_len"] = self.max_model_len
            entries.append(entry)
        return web.json_response({"object": "list", "data": entries})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused_auth(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.requests.append(body)
        await self._notify()
        steps = self._scripts.popleft() if self._scripts else self.answer(body)
        if steps and isinstance(steps[0], Refuse):
            return _refusal(steps[0])
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self.num_open += 1
        self.max_open = max(self.max_open, self.num_open)
        await self._notify()
        try:
            await self._stream(request, response, body, steps)
        except (asyncio.CancelledError, ConnectionResetError):
            self.num_disconnects += 1  # the client went away
            raise
        else:
            self.num_finished += 1
        finally:
            self.num_open -= 1
            # Shielded: this runs while the handler is being cancelled.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._notify())
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: dict[str, Any],
        steps: list[Step],
    ) -> None:
        chunk_id = f"chatcmpl-{next(self._ids)}"
        model = body.get("model", "")
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(payload: object) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                **extra,
            }

        # vLLM opens every stream with the role.
        await send(chunk([_choice({"role": "assistant", "content": ""})]))
        for step in steps:
            if isinstance(step, Delta):
                if delay := self.pace():
                    await asyncio.sleep(delay)
                await send(chunk([_choice(step.fields)]))
            elif isinstance(step, Finish):
                choice = _choice({}, step.reason)
                choice["stop_reason"] = step.stop_reason
                await send(chunk([choice]))
            elif isinstance(step, Usage):
                if wants_usage:
                    total = step.prompt_tokens + step.completion_tokens
                    usage = {
                        "prompt_tokens": step.prompt_tokens,
                        "completion_tokens": step.completion_tokens,
                        "total_tokens": total,
                    }
                    await send(chunk([], usage=usage))
            elif isinstance(step, Done):
                await response.write(b"data: [DONE]\n\n")
            elif isinstance(step, Comment):
                await response.write(b": keep-alive\n\n")
            elif isinstance(step, ErrorEvent):
                error = {"message": step.message, "type": "InternalServerError", "code": step.code}
                await send({"error": error})
            elif isinstance(step, Cut):
                assert request.transport is not None
                request.transport.abort()  # no end of the chunked body: the client sees a cut
                await self._notify()
                return
            elif isinstance(step, Hold):
                await step.event.wait()
        await response.write_eof()


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status=status,
    )


def _refusal(step: Refuse) -> web.Response:
    response = _error(step.status, step.message, "error")
    if step.retry_after is not None:
        response.headers["Retry-After"] = step.retry_after
    return response
