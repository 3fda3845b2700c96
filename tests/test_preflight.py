"""Tokens checked with the platforms before the model loads: `run` and `check --online`."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.support.configs import REPO, bot_command, bot_env, write_config

WRONG_TELEGRAM_TOKEN = "987654321:AAWrongTokenWrongTokenWrongToken012"
WRONG_DISCORD_TOKEN = "not-the-bots-token"


async def run_bot(*args: str) -> tuple[int, str, str]:
    """`python -m bot ...` as a subprocess, with this event loop free to serve the fakes."""
    process = await asyncio.create_subprocess_exec(
        *bot_command(*args),
        cwd=REPO,
        env=bot_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def config_for(
    tmp_path: Path, *, telegram: dict | None = None, discord: dict | None = None
) -> Path:
    sections: dict[str, dict] = {
        # No model there: a check that got as far as loading would fail on it instead.
        "model": {"path": str(tmp_path / "no-model-here"), "device": "cpu"},
        "storage": {"path": str(tmp_path / "bot.db")},
    }
    if telegram is not None:
        sections["telegram"] = {"enabled": True, **telegram}
    if discord is not None:
        sections["discord"] = {"enabled": True, **discord}
    return write_config(tmp_path / "config.toml", sections)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_refused_telegram_token_stops_run_before_the_model_loads(tmp_path: Path) -> None:
    async with FakeTelegram() as tg:
        config = config_for(
            tmp_path, telegram={"token": WRONG_TELEGRAM_TOKEN, "base_url": tg.base_url}
        )
        code, stdout, stderr = await run_bot("run", "--config", str(config))
        asked = [c.method for c in tg.calls]
    assert code == 1
    assert stderr.strip().splitlines() == [
        "error: [telegram] token: Telegram refused the bot token (401)"
    ]
    assert asked == ["getMe"]  # nothing else: no model, no polling
    assert WRONG_TELEGRAM_TOKEN not in stdout + stderr
    assert not (tmp_path / "bot.db").exists()


async def test_an_unreachable_platform_is_named_with_what_to_check(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/bot"
    config = config_for(tmp_path, telegram={"token": WRONG_TELEGRAM_TOKEN, "base_url": base_url})
    code, _stdout, stderr = await run_bot("run", "--config", str(config))
    assert code == 1
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: [telegram] cannot reach the Bot API at 127.0.0.1:")
    assert line.endswith("check base_url and proxy")
    assert WRONG_TELEGRAM_TOKEN not in stderr


async def test_a_refused_discord_token_stops_run_before_the_model_loads(tmp_path: Path) -> None:
    async with FakeDiscord() as dc:
        config = config_for(
            tmp_path, discord={"token": WRONG_DISCORD_TOKEN, "api_base": dc.api_base}
        )
        code, stdout, stderr = await run_bot("run", "--config", str(config))
    assert code == 1
    assert stderr.strip().splitlines() == [
        "error: [discord] token: Discord refused the bot token (401)"
    ]
    assert WRONG_DISCORD_TOKEN not in stdout + stderr


async def test_check_online_signs_in_everywhere_without_loading_the_model(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeDiscord() as dc:
        config = config_for(
            tmp_path,
            telegram={"token": tg.token, "base_url": tg.base_url},
            discord={"token": dc.token, "api_base": dc.api_base},
        )
        code, stdout, stderr = await run_bot("check", "--online", "--config", str(config))
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert "telegram: ok, signed in as @" in stdout
    assert "discord: ok, signed in as r1bot" in stdout
    assert lines[-1] == "model: no GPU: the fit check is skipped"
    assert tg.token not in stdout + stderr
    assert dc.token not in stdout + stderr


async def test_check_online_reports_each_problem_and_fails(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeDiscord() as dc:
        config = config_for(
            tmp_path,
            telegram={"token": WRONG_TELEGRAM_TOKEN, "base_url": tg.base_url},
            discord={"token": dc.token, "api_base": dc.api_base},
        )
        code, stdout, _stderr = await run_bot("check", "--online", "--config", str(config))
    assert code == 1
    assert "telegram: [telegram] token: Telegram refused the bot token (401)" in stdout
    assert "discord: ok, signed in as r1bot" in stdout
