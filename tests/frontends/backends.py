"""The engine backends the end-to-end tests run over: the scripted tiny model, or the same
words streamed by the fake OpenAI-compatible server (what `[engine] backend = "openai"` uses).

A test module's model fixture is parametrized over BACKENDS; for "openai" it hands the harness
a RemoteModel instead of the torch model, and the harness starts the fake server for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from bot.config import Settings
from bot.engine.remote import OpenAIEngine
from tests.fakes.openai_api import FakeOpenAI, answer_steps

BACKENDS = ("local", "openai")


class Pace:
    """Seconds before each streamed piece; tests turn `delay` as they do a local Throttle's,
    and count the pieces sent in `num_steps` as a Throttle counts the model's steps."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.num_steps = 0

    def next_delay(self) -> float:
        self.num_steps += 1
        return self.delay


@dataclass
class RemoteModel:
    """Stands in for a scripted model: the server streams `script` ("reasoning</think>answer")."""

    script: str
    throttle: Pace


def on_backend(backend: str, model: Any, script: str) -> Any:
    """`model` (the scripted torch model saying `script`) for "local", else a RemoteModel."""
    return model if backend == "local" else RemoteModel(script, Pace())


def as_openai(settings: Settings) -> Settings:
    """The settings with `[engine] backend = "openai"`, as the operator would have them."""
    return replace(settings, engine=replace(settings.engine, backend="openai"))


@contextlib.asynccontextmanager
async def openai_engine_factory(
    model: RemoteModel, tokenizer: Any, *, max_concurrency: int = 4, max_queue: int = 256
) -> AsyncIterator[Any]:
    """A fake server answering every request with the script, and an engine factory for it.

    Four streams at once by default, as the local harness engine has four slots: the same
    requests wait in the queue (with their positions shown) on both backends.
    """
    async with FakeOpenAI() as server:
        # reasoning_content: what vLLM and SGLang send with their deepseek_r1 reasoning parser.
        server.answer = lambda body: answer_steps(model.script, form="reasoning_content")
        server.pace = model.throttle.next_delay

        def build(settings: Settings) -> tuple[Any, OpenAIEngine]:
            engine = OpenAIEngine(
                server.base_url,
                max_concurrency=max_concurrency,
                max_queue=max_queue,
                max_context_tokens=settings.model.max_context_tokens,
            )
            return tokenizer, engine

        build.server = server  # type: ignore[attr-defined]  # for tests that count streams
        yield build
