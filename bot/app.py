"""Wiring: config -> store -> engine -> service, as nested lifetimes (stopped in reverse order)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.chat.prompt import PromptBuilder
from bot.chat.service import ChatService
from bot.config import Settings
from bot.metrics import Metrics
from bot.store.records import InterruptedReply
from bot.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class App:
    settings: Settings
    store: SqliteStore
    engine: Any
    service: ChatService
    tokenizer: Any
    metrics: Metrics
    # Answers a killed bot left half-written, now stored as interrupted: front-ends may edit
    # the messages that showed them (see InterruptedReply.location).
    interrupted: list[InterruptedReply] = field(default_factory=list)


EngineFactory = Callable[[Settings], tuple[Any, Any]]


def engine_factory_for(settings: Settings) -> EngineFactory:
    """The builder `[engine] backend` names; imported lazily, so `openai` never loads CUDA."""
    if settings.engine.backend == "openai":
        from bot.engine.remote_factory import build_openai_engine

        return build_openai_engine
    from bot.engine.factory import build_local_engine

    return build_local_engine


def platforms_of(settings: Settings) -> list[str]:
    """The platforms this bot serves: their metric series exist (at zero) from the start."""
    names = [name for name in ("telegram", "discord") if getattr(settings, name).enabled]
    return names or ["console"]


@asynccontextmanager
async def open_app(
    settings: Settings, *, engine_factory: EngineFactory | None = None
) -> AsyncIterator[App]:
    """Open the store, load and start the engine, and build the chat service.

    The engine comes from `[engine] backend` unless a test passes its own `engine_factory`.
    """
    if engine_factory is None:
        engine_factory = engine_factory_for(settings)
    database = Path(settings.storage.path)
    is_new_database = not database.exists()
    try:
        async with _open_app(settings, engine_factory) as app:
            is_new_database = False  # ready: from here on the file is the bot's
            yield app
    except BaseException:
        # A start that failed (no weights, no GPU) leaves no empty database behind.
        if is_new_database:
            for suffix in ("", "-wal", "-shm", "-journal"):
                database.with_name(database.name + suffix).unlink(missing_ok=True)
        raise


@asynccontextmanager
async def _open_app(settings: Settings, engine_factory: EngineFactory) -> AsyncIterator[App]:
    # The store first: a bad database path fails in a second, not after a minute of loading.
    async with SqliteStore.open(settings.storage.path) as store:
        # Before any turn: what a killed bot was writing joins the dialogue as interrupted.
        interrupted = await store.recover_interrupted()
        if interrupted:
            log.warning("%d answer(s) were cut by a restart; kept as interrupted", len(interrupted))
        tokenizer, engine = await asyncio.to_thread(engine_factory, settings)
        async with engine:
            context = min(settings.model.max_context_tokens, engine.max_sequence_tokens)
            prompts = PromptBuilder(
                tokenizer,
                max_context_tokens=context,
                max_new_tokens=settings.generation.max_new_tokens,
            )
            metrics = Metrics(platforms_of(settings))
            metrics.watch_engine(
                queue_depth=lambda: engine.num_waiting,
                active_generations=lambda: engine.num_running,
            )
            service = ChatService(
                store,
                engine,
                prompts,
                chat=settings.chat,
                generation=settings.generation,
                on_reply=metrics.observe_finished,
                checkpoint_seconds=settings.storage.checkpoint_seconds,
            )
            log.info(
                "ready: %s model %s, up to %d chats at once, %d-token context",
                settings.engine.backend,
                getattr(engine, "model", "") or settings.model.path,
                engine.max_batch_size,
                context,
            )
            try:
                yield App(settings, store, engine, service, tokenizer, metrics, interrupted)
            finally:
                # Every answer still being written is stored (as interrupted) before the
                # engine and the store close.
                await service.interrupt_all()
