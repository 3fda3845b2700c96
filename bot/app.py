"""Wiring: config -> store -> engine -> service, as nested lifetimes (stopped in reverse order)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.chat.prompt import PromptBuilder
from bot.chat.service import ChatService
from bot.config import Settings
from bot.engine.local import LocalEngine
from bot.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class App:
    settings: Settings
    store: SqliteStore
    engine: Any
    service: ChatService
    tokenizer: Any


def build_local_engine(settings: Settings) -> tuple[Any, LocalEngine]:
    """Load tokenizer and model and size the KV cache (blocking: run it in a thread)."""
    from bot.engine.loading import (
        eos_token_ids,
        load_model,
        load_tokenizer,
        resolve_device,
        size_cache,
    )
    from bot.engine.runner import ModelRunner

    # A machine that cannot run this config (4-bit without a GPU) is told so at once, not after
    # fetching the tokenizer, or failing to, which would hide the real problem.
    resolve_device(settings.model)
    tokenizer = load_tokenizer(settings.model)
    model = load_model(settings.model)
    shape = size_cache(model, settings.model, settings.engine)
    runner = ModelRunner(
        model, shape, use_cuda_graphs=settings.engine.cuda_graphs, seed=settings.engine.seed
    )
    engine = LocalEngine(
        runner,
        tokenizer,
        eos_token_ids=eos_token_ids(model, tokenizer),
        max_queue=settings.engine.max_queue,
    )
    return tokenizer, engine


EngineFactory = Callable[[Settings], tuple[Any, Any]]


@asynccontextmanager
async def open_app(
    settings: Settings, *, engine_factory: EngineFactory = build_local_engine
) -> AsyncIterator[App]:
    """Open the store, load and start the engine, and build the chat service."""
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
        tokenizer, engine = await asyncio.to_thread(engine_factory, settings)
        async with engine:
            context = min(settings.model.max_context_tokens, engine.max_sequence_tokens)
            prompts = PromptBuilder(
                tokenizer,
                max_context_tokens=context,
                max_new_tokens=settings.generation.max_new_tokens,
            )
            service = ChatService(
                store, engine, prompts, chat=settings.chat, generation=settings.generation
            )
            log.info(
                "ready: model %s, up to %d chats at once, %d-token context",
                settings.model.path,
                engine.max_batch_size,
                context,
            )
            try:
                yield App(settings, store, engine, service, tokenizer)
            finally:
                # Every answer still being written is stored (as interrupted) before the
                # engine and the store close.
                await service.interrupt_all()
