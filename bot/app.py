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
from bot.engine.factory import build_local_engine
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
    # Answers a killed bot left half-written, now stored as interrupted: front-ends may edit
    # the messages that showed them (see InterruptedReply.location).
    interrupted: list[InterruptedReply] = field(default_factory=list)


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
            service = ChatService(
                store,
                engine,
                prompts,
                chat=settings.chat,
                generation=settings.generation,
                checkpoint_seconds=settings.storage.checkpoint_seconds,
            )
            log.info(
                "ready: model %s, up to %d chats at once, %d-token context",
                settings.model.path,
                engine.max_batch_size,
                context,
            )
            try:
                yield App(settings, store, engine, service, tokenizer, interrupted)
            finally:
                # Every answer still being written is stored (as interrupted) before the
                # engine and the store close.
                await service.interrupt_all()
