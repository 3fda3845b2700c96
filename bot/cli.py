"""Command line: run | console | history | check | backup."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import cli_data
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging

NO_FRONTEND = (
    "No front-end to start: set [telegram] or [discord] enabled = true with a token in the config "
    "(or TELEGRAM_BOT_TOKEN / DISCORD_BOT_TOKEN in the environment), "
    "or chat in the terminal with `python -m bot console`."
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


async def _console(settings: Settings, config: Path | None) -> int:
    from bot.app import open_app
    from bot.frontends.console_ui import ConsoleUI

    # On stdout with the rest of the conversation: stderr carries only what went wrong.
    print(f"Loading {settings.model.path} …", flush=True)
    async with open_app(settings, config=config, environ=os.environ) as app:
        ui = ConsoleUI(
            app.service,
            reasoning_mode=settings.chat.reasoning,
            metrics=app.metrics,
            reloader=app.reloader,
        )
        await ui.run()
    return 0


async def _run(settings: Settings, config: Path | None) -> int:
    if not (settings.telegram.enabled or settings.discord.enabled):
        print(NO_FRONTEND, file=sys.stderr)
        return 2
    # Before the model loads (a minute, or a download): a refused token is found in a second.
    if problems := await _refused_platforms(settings):
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    # torch and transformers: only when there is work to do
    from bot.app import Signals, open_app, platform_frontends, serve_until_stopped

    signals = Signals(asyncio.get_running_loop())
    async with open_app(
        settings,
        frontends=platform_frontends,
        serves_metrics=True,
        config=config,
        environ=os.environ,
        applies_log_level=True,
    ) as app:
        signals.reload_with(app.reloader)
        status = await serve_until_stopped(app, signals.stop)
    if not app.shutdown.is_in_time:
        # The store is closed (every answer stored); what is left are platform calls that
        # hang, which asyncio.run would wait for on its way out. The grace period is over.
        logging.shutdown()
        os._exit(status)
    return status
