"""Command line: run | console | history | check | backup."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import cli_data
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.reload import LiveSettings, Reloader

if TYPE_CHECKING:
    from bot.engine.base import Engine

log = logging.getLogger("bot")

NO_FRONTEND = (
    "No front-end to start: set [telegram] or [discord] enabled = true with a token in the config "
    "(or TELEGRAM_BOT_TOKEN / DISCORD_BOT_TOKEN in the environment), "
    "or chat in the terminal with `python -m bot console`."
)
OPEN_TO_EVERYONE = (
    "%s: the bot answers everyone who finds it: no allowlist is set (set %s to restrict it)"
)


def main(argv: Sequence[str] | None = None) -> int:
    # python-telegram-bot 22: report RetryAfter as a timedelta (no deprecation warning per 429).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = args.command == "console"
    _configure_logging(settings, quiet=console or args.command in ("history", "backup"))
    try:
        if args.command == "check":
            status = _check(settings)
            return asyncio.run(_check_online(settings)) if args.online else status
        if args.command == "history" and args.delete:
            return asyncio.run(cli_data.delete_history(settings, args))
        if args.command == "history":
            return asyncio.run(_history(settings, args))
        if args.command == "backup":
            return asyncio.run(cli_data.backup(settings, args))
        if console:
            return asyncio.run(_console(settings, args.config))
        return asyncio.run(_run(settings, args.config))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every expected failure is one sentence, not a traceback
        message = _expected_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("run", "serve the enabled front-ends (Telegram, Discord)"),
        ("console", "chat with the model in this terminal"),
        ("check", "validate the configuration and print it (without secrets)"),
        ("history", "print stored messages as JSON lines (or delete a user's with --delete)"),
        ("backup", "copy the database to PATH, also while the bot runs"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML config file (default: ./config.toml if present)",
        )
        if name == "history":
            command.add_argument(
                "--platform", help="only this platform (telegram, discord, console)"
            )
            command.add_argument("--chat", help="only this chat id")
            command.add_argument("--user", help="only this user id")
            command.add_argument(
                "--delete", action="store_true", help="delete the --user's dialogues instead"
            )
            command.add_argument("--yes", action="store_true", help="delete without asking")
        if name == "check":
            command.add_argument(
                "--online",
                action="store_true",
                help="also ask each platform to accept its token and estimate the GPU fit",
            )
        if name == "backup":
            command.add_argument("path", type=Path, help="the new file (must not exist)")
            command.add_argument("--force", action="store_true", help="replace PATH if it exists")
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("r1-chat-bot")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def _configure_logging(settings: Settings, *, quiet: bool) -> None:
    configure_logging(settings.logging.level, format=settings.logging.format, quiet=quiet)


def _expected_error(exc: BaseException) -> str | None:
    from bot.engine.base import EngineError
    from bot.frontends.base import StartupError
    from bot.store.sqlite import StoreError

    if isinstance(exc, ConfigError | EngineError | StoreError | StartupError):
        return str(exc)
    return None


def _check(settings: Settings) -> int:
    print(f"config: {settings.source}")
    sections = ["model", "generation", "engine", "storage", "chat", "telegram", "discord"]
    if settings.engine.backend == "openai":
        sections.insert(3, "openai")
    sections.append("metrics")
    for section in sections:
        values = getattr(settings, section).__dict__
        shown = ", ".join(f"{key}={_printable(key, value)!r}" for key, value in values.items())
        print(f"[{section}] {shown}")
    print(f"backend: {_backend_line(settings)}")
    port = settings.metrics.port
    print(
        f"metrics: http://{settings.metrics.listen}:{port}/metrics and /healthz"
        if port
        else "metrics: off ([metrics] port = 0)"
    )
    return 0


async def _check_online(settings: Settings) -> int:
    """The platforms accept the tokens, and the model fits the GPU (no weights loaded)."""
    from bot import preflight

    problems = 0
    for check in await preflight.check_platforms(settings):
        if check.is_ok:
            print(f"{check.platform}: ok, signed in as {check.identity}")
        else:
            print(f"{check.platform}: {check.problem}")
            problems += 1
    if settings.engine.backend == "local":
        from bot.engine.base import EngineError
        from bot.engine.loading import check_gpu_fit

        try:
            print(f"model: {await asyncio.to_thread(check_gpu_fit, settings.model)}")
        except EngineError as error:
            print(f"model: {error}")
            problems += 1
    return 1 if problems else 0


async def _refused_platforms(settings: Settings) -> list[str]:
    """Each enabled platform that refuses its token or cannot be reached, in one line each."""
    from bot import preflight

    return [c.problem for c in await preflight.check_platforms(settings) if c.problem]


def _backend_line(settings: Settings) -> str:
    if settings.engine.backend == "openai":
        from bot.frontends.redact import hide_password

        remote = settings.openai
        model = remote.model or "(the server's first model)"
        return f"openai at {hide_password(remote.base_url)}, model {model}"
    return f"local, model {settings.model.path}"


def _printable(key: str, value: object) -> object:
    """A setting as `check` prints it: secrets only as set/unset, proxy passwords hidden."""
    from bot.frontends.redact import hide_password

    if key in ("token", "webhook_secret", "api_key"):
        return "<set>" if value else "<unset>"
    if key in ("proxy", "base_url") and isinstance(value, str):
        return hide_password(value)
    return value


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store.sqlite import SqliteStore

    if not Path(settings.storage.path).exists():
        print(f"error: no database at {settings.storage.path}", file=sys.stderr)
        return 1
    async with SqliteStore.open(settings.storage.path) as store:
        records = await store.query_messages(
            platform=args.platform, chat_id=args.chat, user_id=args.user
        )
    for record in records:
        print(json.dumps(record.as_json(), ensure_ascii=False))
    return 0


async def _console(settings: Settings, config: Path | None = None) -> int:
    from bot.app import open_app
    from bot.frontends.console_ui import ConsoleUI

    # On stdout with the rest of the conversation: stderr carries only what went wrong.
    print(f"Loading {settings.model.path} …", flush=True)
    async with open_app(settings) as app:
        _, reloader = _live_settings(settings, config, app, set_log_level=False)
        ui = ConsoleUI(
            app.service,
            app.store,
            reasoning_mode=settings.chat.reasoning,
            metrics=app.metrics,
            reloader=reloader,
        )
        await ui.run()
    return 0


def _live_settings(
    settings: Settings, config: Path | None, app: object, *, set_log_level: bool = True
) -> tuple[LiveSettings, Reloader]:
    """The settings a reload (SIGHUP, /reload) swaps, wired to the parts that copy them."""
    live = LiveSettings(settings)
    live.subscribe(lambda s: app.service.apply_settings(chat=s.chat, generation=s.generation))
    if set_log_level:  # the console keeps its log quiet whatever the file says
        live.subscribe(lambda s: logging.getLogger().setLevel(s.logging.level))
    return live, Reloader(live, config, os.environ)


def _frontends(settings: Settings, app: object, live: LiveSettings, reloader: Reloader) -> list:
    from bot.frontends.discord_ui.access import is_open_to_everyone as discord_is_open
    from bot.frontends.telegram_ui.access import is_open_to_everyone as telegram_is_open

    frontends = []
    shared = {
        "chat": settings.chat,
        "live": live,
        "reloader": reloader,
        "metrics": app.metrics,
    }
    if settings.telegram.enabled:
        from bot.frontends.telegram_ui.frontend import TelegramFrontend

        frontends.append(TelegramFrontend(settings.telegram, app.service, **shared))
        if telegram_is_open(settings.telegram):
            log.warning(OPEN_TO_EVERYONE, "telegram", "allowed_users or allowed_chats")
    if settings.discord.enabled:
        from bot.frontends.discord_ui.frontend import DiscordFrontend

        frontends.append(DiscordFrontend(settings.discord, app.service, **shared))
        if discord_is_open(settings.discord):
            log.warning(
                OPEN_TO_EVERYONE,
                "discord",
                "allowed_users, allowed_guilds, allowed_channels or allowed_roles",
            )
    return frontends


async def _run(settings: Settings, config: Path | None = None) -> int:
    if not (settings.telegram.enabled or settings.discord.enabled):
        print(NO_FRONTEND, file=sys.stderr)
        return 2
    # Before the model loads (a minute, or a download): a refused token is found in a second.
    if problems := await _refused_platforms(settings):
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    from bot.app import open_app  # torch and transformers: only when there is work to do
    from bot.frontends.base import StartupError
    from bot.metrics import serve_metrics, watch_frontend

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A SIGHUP while the model loads (minutes) must not kill the bot: it is answered once
    # loading is done, since the file may have changed after it was read.
    early_hups: list[None] = []
    loop.add_signal_handler(signal.SIGHUP, early_hups.append, None)
    status = 0
    is_shut_down = True
    async with open_app(settings) as app, serve_metrics(settings.metrics, app) as metrics_server:
        live, reloader = _live_settings(settings, config, app)
        # SIGHUP re-reads the config (allowlists, limits, ...) without reloading the model.
        reloads: set[asyncio.Task[object]] = set()  # held until done (tasks are weakly kept)

        def on_sighup() -> None:
            task = asyncio.create_task(reloader.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        if early_hups:
            on_sighup()
        frontends = _frontends(settings, app, live, reloader)
        started = []
        try:
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
                started.append(frontend)
                watch_frontend(metrics_server, frontend)
                await frontend.announce_interrupted(app.interrupted)
            log.info("serving on %s; Ctrl-C stops", ", ".join(f.name for f in started))
            # What is loaded now (model, libraries) lives until exit: keep it out of the cyclic
            # GC's full collections, which otherwise pause the event loop for 0.1-0.2 s.
            gc.freeze()
            broken = await _until_stopped_or_broken(stop, app.engine)
            if broken is not None:
                # A bot that answers every message with an error helps nobody: exit non-zero
                # so that a supervisor (systemd, Docker) restarts it with a fresh worker.
                log.error("stopping: %s", broken)
                status = 1
            else:
                log.info("stopping")
        finally:
            for frontend in started:
                await frontend.stop_receiving()
            is_shut_down = await _shut_down(app, started, settings.chat.shutdown_grace_seconds)
    if not is_shut_down:
        # The store is closed (every answer stored); what is left are platform calls that
        # hang, which asyncio.run would wait for on its way out. The grace period is over.
        logging.shutdown()
        os._exit(status)
    return status


async def _shut_down(app: Any, frontends: list, grace_seconds: float) -> bool:
    """Cut running answers short (stored as interrupted), then let each front-end land the
    text so far with a note before disconnecting; within the grace period, so that a platform
    that hangs cannot hold the exit (the checkpoints keep what was not landed)."""
    try:
        async with asyncio.timeout(grace_seconds):
            await app.service.interrupt_all()
            for frontend in reversed(frontends):
                await frontend.close()
        return True
    except TimeoutError:
        log.warning(
            "stopping: not done after %g s ([chat] shutdown_grace_seconds); exiting anyway",
            grace_seconds,
        )
        return False


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
