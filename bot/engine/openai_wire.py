"""The OpenAI streaming chat-completions protocol as the remote engine speaks it.

What the server's answers mean: the model list, refusals (retry or fail), the server-sent events
of one answer (reasoning in `reasoning_content`, `reasoning` or inline, usage, errors inside the
stream, finish reasons), and the retry policy before the first token. bot/engine/remote.py keeps
the queue and the connections.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource

from bot.engine.base import EngineError, EngineEvent, FinishReason, TextDelta

log = logging.getLogger("bot.engine.remote")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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


class RetryLater(Exception):
    """A failure before the first token that another attempt may not have."""

    def __init__(self, user_text: str, retry_after: float | None = None) -> None:
        super().__init__(user_text)
        self.user_text = user_text
        self.retry_after = retry_after


class RequestFailed(Exception):
    """The request failed for good: `user_text` is shown to the user."""

    def __init__(self, user_text: str) -> None:
        super().__init__(user_text)
        self.user_text = user_text


@dataclass(eq=False, kw_only=True)
class StreamProgress:
    """What one request's stream has brought so far; `emit` passes an event on."""

    first_token_at: float | None = None  # loop time
    num_chunks: int = 0  # deltas with text: the token count when the server sends no usage
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None

    def emit(self, event: EngineEvent) -> None:
        raise NotImplementedError


async def check_models(
    client: httpx.AsyncClient, base_url: str, model: str, max_context_tokens: int
) -> tuple[str, int]:
    """GET /models: the server is there, takes our key, and serves the model.

    Returns the model to ask for (`model`, or the first listed when empty) and the context
    length (the server's when it says, vLLM does, capped by `max_context_tokens`).
    """
    where = f"[openai] base_url {_without_credentials(base_url)}"
    try:
        response = await client.get("models")
    except httpx.TimeoutException:
        raise EngineError(f"{where}: the server did not answer in time") from None
    except httpx.TransportError as exc:
        raise EngineError(f"{where}: cannot connect ({describe_transport(exc)})") from None
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
    if not model:
        model = ids[0]
    elif model not in ids:
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        raise EngineError(
            f"[openai] model {model!r} is not served at "
            f"{_without_credentials(base_url)} (it lists: {shown})"
        )
    entry = entries[ids.index(model)]
    for key in ("max_model_len", "context_length"):  # vLLM's, OpenRouter's
        length = entry.get(key)
        if isinstance(length, int) and length > 0:
            return model, min(max_context_tokens, length)
    return model, max_context_tokens


def refusal(response: httpx.Response, api_key: str) -> Exception:
    """What a non-200 answer (already read) means: RetryLater (429, 5xx) or RequestFailed."""
    status = response.status_code
    message = _server_message(response.content, api_key)
    if status in RETRY_STATUSES:
        text = "the model server is busy" if status == 429 else "the model server failed"
        return RetryLater(f"{text} (HTTP {status})", _retry_after(response))
    log.warning("openai request refused: HTTP %d %s", status, message)
    if status in (401, 403):
        return RequestFailed(f"the model server refused the API key (HTTP {status})")
    return RequestFailed(f"the model server refused the request (HTTP {status})")


async def read_events(job: StreamProgress, events: EventSource, api_key: str) -> FinishReason:
    """Read one answer's server-sent events into `job`; the finish reason it ended with."""
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
            raise RequestFailed("the model server sent a malformed answer") from None
        if not isinstance(data, dict):
            continue
        if event.event == "error" or "error" in data or data.get("object") == "error":
            _fail_on_error_event(job, data, api_key)
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
            raise RetryLater("the model server closed the stream before answering")
        raise RequestFailed("the connection to the model server was lost")
    return _finish_reason(finish, stop_reason)


def _fail_on_error_event(job: StreamProgress, data: dict[str, Any], api_key: str) -> None:
    """An error sent inside the stream (vLLM, SGLang, OpenRouter do this mid-answer)."""
    error = data.get("error") if isinstance(data.get("error"), dict) else data
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) else None
    log.warning(
        "openai stream error: %s",
        _server_message(json.dumps(data).encode(), api_key),
    )
    if job.first_token_at is None and status in RETRY_STATUSES:
        raise RetryLater(f"the model server failed (error {status})")
    raise RequestFailed("the model server failed while answering")


def _finish_reason(finish: str, stop_reason: object) -> FinishReason:
    if finish == "stop" and isinstance(stop_reason, str) and stop_reason:
        return FinishReason.STOP  # vLLM names the stop string that matched
    reason = _FINISH_REASONS.get(finish)
    if reason is not None:
        return reason
    if finish == "content_filter":
        raise RequestFailed("the model server's content filter stopped the answer")
    raise RequestFailed("the model server ended the answer unexpectedly")


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


def describe_transport(exc: httpx.TransportError) -> str:
    return type(exc).__name__


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
