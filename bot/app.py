"""The one lifespan: store -> engine -> chat service -> metrics server -> front-ends.

They open in that order on one AsyncExitStack and close in reverse. The shutdown between the
last message and the engine's end (stop taking messages, cut answers short, land them,
disconnect) is written here and nowhere else: `Shutdown.run`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.chat.prompt import PromptBuilder
from bot.chat.service import ChatService
from bot.config import ConfigError, Settings
from bot.engine.base import Engine
from bot.frontends.base import Frontend, StartupError
from bot.metrics import Metrics, MetricsServer, serve_metrics, watch_frontend
from bot.reload import LiveSettings, Reloader
from bot.store.records import InterruptedReply
from bot.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

OPEN_TO_EVERYONE = (
    "%s: the bot answers everyone who finds it: no allowlist is set (set %s to restrict it)"
)


class Shutdown:
    """The app's one closing state: whether it began, and whether it ended within its budget."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.is_closing = False
        # False once the answers or the front-ends took longer than the grace period to land
        # and disconnect: what is left (platform calls that hang) should not hold the exit.
        self.is_in_time = True

    async def run(self, service: ChatService, frontends: Sequence[Frontend]) -> None:
        """Stop taking messages, cut every answer short once, land them and disconnect.

        Landing and disconnecting get the grace period, so that a platform that hangs cannot
        hold the exit (the checkpoints keep what was not landed); storing the answers (as
        interrupted) is waited for in any case, since the engine and the store close next.
        """
        if self.is_closing:
            return
        self.is_closing = True
        try:
            for frontend in frontends:
                await frontend.stop_receiving()
        finally:
            stored = asyncio.ensure_future(service.interrupt_all())
            try:
                async with asyncio.timeout(self.grace_seconds):
                    await asyncio.shield(stored)
                    for frontend in reversed(frontends):
                        await frontend.close()
            except TimeoutError:
                self.is_in_time = False
                log.warning(
                    "stopping: not done after %g s ([chat] shutdown_grace_seconds); exiting anyway",
                    self.grace_seconds,
                )
            await stored


@dataclass(frozen=True)
class App:
    settings: Settings
    store: SqliteStore
    engine: Engine
    service: ChatService
    tokenizer: Any
    metrics: Metrics
    live: LiveSettings  # what a reload (SIGHUP, /reload) swaps
    reloader: Reloader
    shutdown: Shutdown
    # Answers a killed bot left half-written, now stored as interrupted: front-ends may edit
    # the messages that showed them (see InterruptedReply.location).
    interrupted: list[InterruptedReply] = field(default_factory=list)
    frontends: list[Frontend] = field(default_factory=list)  # those started, in order


EngineFactory = Callable[[Settings], tuple[Any, Engine]]  # (tokenizer, engine)
FrontendFactory = Callable[[App], Sequence[Frontend]]


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


def platform_frontends(app: App) -> list[Frontend]:
    """The Telegram and Discord front-ends the settings enable, wired to the app."""
    from bot.frontends.discord_ui.access import is_open_to_everyone as discord_is_open
    from bot.frontends.telegram_ui.access import is_open_to_everyone as telegram_is_open

    settings = app.settings
    frontends: list[Frontend] = []
    shared = {"chat": settings.chat, "live": app.live, "reloader": app.reloader}
    if settings.telegram.enabled:
        from bot.frontends.telegram_ui.frontend import TelegramFrontend

        frontends.append(
            TelegramFrontend(settings.telegram, app.service, metrics=app.metrics, **shared)
        )
        if telegram_is_open(settings.telegram):
            log.warning(OPEN_TO_EVERYONE, "telegram", "allowed_users or allowed_chats")
    if settings.discord.enabled:
        from bot.frontends.discord_ui.frontend import DiscordFrontend

        frontends.append(
            DiscordFrontend(settings.discord, app.service, metrics=app.metrics, **shared)
        )
        if discord_is_open(settings.discord):
            log.warning(
                OPEN_TO_EVERYONE,
                "discord",
                "allowed_users, allowed_guilds, allowed_channels or allowed_roles",
            )
    return frontends


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    frontends: FrontendFactory | None = None,
    serves_metrics: bool = False,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    applies_log_level: bool = False,
) -> AsyncIterator[App]:
    """Open the store, load and start the engine, build the chat service, then (if given) serve
    the metrics and start the front-ends; on the way out, shut down and close in reverse.

    The engine comes from `[engine] backend` unless a test passes its own `engine_factory`.
    A reload re-reads `config` and `environ`; `applies_log_level`: it also sets the log level
    (the console keeps its log quiet whatever the file says).
    """
    if engine_factory is None:
        engine_factory = engine_factory_for(settings)
    database = Path(settings.storage.path)
    is_new_database = not database.exists()
    try:
        async with AsyncExitStack() as stack:
            reloader_for = functools.partial(Reloader, path=config, env=environ or {})
            app = await _open_core(stack, settings, engine_factory, reloader_for)
            _follow_reloads(app, applies_log_level=applies_log_level)
            is_new_database = False  # ready: from here on the file is the bot's
            server = None
            if serves_metrics:
                server = await stack.enter_async_context(serve_metrics(settings.metrics, app))
            # Before any front-end starts: one that fails to start still shuts the others down.
            stack.push_async_callback(app.shutdown.run, app.service, app.frontends)
            if frontends is not None:
                await _start(app, frontends(app), server)
            yield app
    except BaseException:
        # A start that failed (no weights, no GPU) leaves no empty database behind.
        if is_new_database:
            for suffix in ("", "-wal", "-shm", "-journal"):
                database.with_name(database.name + suffix).unlink(missing_ok=True)
        raise


async def _open_core(
    stack: AsyncExitStack,
    settings: Settings,
    engine_factory: EngineFactory,
    reloader_for: Callable[[LiveSettings], Reloader],
) -> App:
    # The store first: a bad database path fails in a second, not after a minute of loading.
    store = await stack.enter_async_context(SqliteStore.open(settings.storage.path))
    # Before any turn: what a killed bot was writing joins the dialogue as interrupted.
    interrupted = await store.recover_interrupted()
    if interrupted:
        log.warning("%d answer(s) were cut by a restart; kept as interrupted", len(interrupted))
    tokenizer, engine = await asyncio.to_thread(engine_factory, settings)
    await stack.enter_async_context(engine)
    context = min(settings.model.max_context_tokens, engine.max_sequence_tokens)
    prompts = PromptBuilder(
        tokenizer, max_context_tokens=context, max_new_tokens=settings.generation.max_new_tokens
    )
    metrics = Metrics(platforms_of(settings))
    metrics.watch_engine(
        queue_depth=lambda: engine.num_waiting, active_generations=lambda: engine.num_running
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
    live = LiveSettings(settings)
    return App(
        settings,
        store,
        engine,
        service,
        tokenizer,
        metrics,
        live,
        reloader_for(live),
        Shutdown(settings.chat.shutdown_grace_seconds),
        interrupted,
    )


def _follow_reloads(app: App, *, applies_log_level: bool) -> None:
    """Wire the parts that copy a setting to the reloads that change it."""
    service = app.service
    app.live.subscribe(lambda s: service.apply_settings(chat=s.chat, generation=s.generation))
    if applies_log_level:
        app.live.subscribe(lambda s: logging.getLogger().setLevel(s.logging.level))


async def _start(app: App, frontends: Sequence[Frontend], server: MetricsServer | None) -> None:
    """Start each front-end in turn; a failure is one sentence (StartupError)."""
    for frontend in frontends:
        try:
            await frontend.start()
        except (ConfigError, StartupError):
            raise
        except Exception as exc:  # e.g. discord.LoginFailure: one line, no traceback
            log.debug("start-up of %s failed", frontend.name, exc_info=True)
            raise StartupError(
                f"{frontend.name} could not start: {type(exc).__name__}: {exc}"
            ) from None
        app.frontends.append(frontend)
        watch_frontend(server, frontend)
        await frontend.announce_interrupted(app.interrupted)


class Signals:
    """SIGINT and SIGTERM stop the bot; SIGHUP re-reads the config.

    Installed before the model loads (minutes): a SIGHUP meanwhile must not kill the bot, and
    is answered once the app is ready, since the file may have changed after it was read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop = asyncio.Event()
        self._loop = loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        self._early_hups: list[None] = []
        loop.add_signal_handler(signal.SIGHUP, self._early_hups.append, None)
        self._reloads: set[asyncio.Task[object]] = set()  # held until done (weakly kept)

    def reload_with(self, reloader: Reloader) -> None:
        """From now on SIGHUP runs `reloader`; once now if one came while loading."""
        self._loop.add_signal_handler(signal.SIGHUP, self._reload, reloader)
        if self._early_hups:
            self._reload(reloader)

    def _reload(self, reloader: Reloader) -> None:
        task = asyncio.create_task(reloader.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


async def serve_until_stopped(app: App, stop: asyncio.Event) -> int:
    """Serve until `stop` is set (exit status 0) or the engine breaks (1)."""
    log.info("serving on %s; Ctrl-C stops", ", ".join(f.name for f in app.frontends))
    # What is loaded now (model, libraries) lives until exit: keep it out of the cyclic GC's
    # full collections, which otherwise pause the event loop for 0.1-0.2 s.
    gc.freeze()
    broken = await _until_stopped_or_broken(stop, app.engine)
    if broken is None:
        log.info("stopping")
        return 0
    # A bot that answers every message with an error helps nobody: exit non-zero so that a
    # supervisor (systemd, Docker) restarts it with a fresh worker.
    log.error("stopping: %s", broken)
    return 1


async def _until_stopped_or_broken(stop: asyncio.Event, engine: Engine) -> str | None:
    """Wait for a stop signal or for the engine to break; the reason if it broke."""
    stopped = asyncio.create_task(stop.wait())
    broken = asyncio.create_task(engine.wait_broken())
    try:
        await asyncio.wait((stopped, broken), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        broken.cancel()
    return broken.result() if broken.done() and not broken.cancelled() else None
