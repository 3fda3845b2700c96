"""`python -m bot run` with `backend = "openai"`: starts with no weights, answers on Telegram,
serves /healthz and /metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_api import FakeOpenAI, answer_steps
from tests.fakes.telegram_api import FakeTelegram
from tests.frontends.telegram_harness import final_texts
from tests.support.configs import REPO, bot_command, bot_env, write_config

pytestmark = pytest.mark.slow

USER = 42


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until_healthy(client: httpx.AsyncClient, url: str, bot: asyncio.subprocess.Process):
    """Ask /healthz until it answers 200 (the bot is up), or the bot exits."""
    async with asyncio.timeout(90):
        while bot.returncode is None:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise AssertionError(f"the bot exited with {bot.returncode} before it was healthy")


async def test_run_with_the_openai_backend_answers_and_reports_it(tmp_path: Path) -> None:
    port = free_port()
    async with FakeTelegram() as tg, FakeOpenAI() as server:
        server.answer = lambda body: answer_steps("Quick sum.</think>\n\nIt is 4.")
        config = write_config(
            tmp_path / "config.toml",
            {
                "model": {"path": str(tmp_path / "no-model"), "local_files_only": True},
                "engine": {"backend": "openai"},
                "openai": {"base_url": server.base_url},
                "storage": {"path": str(tmp_path / "bot.db")},
                "telegram": {"enabled": True, "token": tg.token, "base_url": tg.base_url},
                "metrics": {"port": port},
            },
        )
        bot = await asyncio.create_subprocess_exec(
            *bot_command("run", "--config", str(config)),
            cwd=REPO,
            env=bot_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as client:
                await until_healthy(client, f"{base}/healthz", bot)
                tg.push_text(USER, "What is 2+2?")
                await tg.wait_for(lambda: final_texts(tg, USER), timeout=60)
                metrics = (await client.get(f"{base}/metrics")).text
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(bot.communicate(), 60)
    assert bot.returncode == 0, stderr.decode()
    assert final_texts(tg, USER) == ["Quick sum.\nIt is 4."]
    replies = {
        (s.labels["platform"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "bot_replies_total"
    }
    assert replies[("telegram", "complete")] == 1
    assert "ready: openai model deepseek-ai/DeepSeek-R1-Distill-Qwen-14B" in stderr.decode()
