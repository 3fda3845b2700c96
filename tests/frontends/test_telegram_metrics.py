"""Metrics of a running bot: /metrics after real turns, /healthz, platform errors, /stats.

On both engine backends: the counts must not depend on which one answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.chat.commands import ADMINS_ONLY_STATS
from bot.metrics import MetricsServer, metrics_server_for, watch_frontend
from tests.frontends.backends import BACKENDS
from tests.frontends.telegram_harness import (
    ADMIN,
    Bot,
    Scripted,
    build_scripted,
    final_texts,
    on_backend,
    running_bot,
)

USER = 42
OTHER = 43


@pytest.fixture(scope="module")
def local_scripted(tokenizer: Any) -> Scripted:
    return build_scripted(tokenizer, num_reasoning_words=12, answer="Forty-two.")


@pytest.fixture(scope="module", params=BACKENDS)
def scripted(request: pytest.FixtureRequest, local_scripted: Scripted) -> Scripted:
    return on_backend(request.param, local_scripted)


async def get(server: MetricsServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{server.port}{path}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def turn(bot: Bot, chat_id: int, text: str, count: int) -> None:
    bot.tg.push_text(chat_id, text)
    await bot.tg.wait_for(lambda: len(final_texts(bot.tg, chat_id)) >= count)
    await bot.wait_idle()


async def test_a_scrape_after_a_few_turns_shows_them(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with (
        running_bot(scripted.model, tokenizer, tmp_path) as bot,
        metrics_server_for(bot.app, port=0) as server,
    ):
        watch_frontend(server, bot.frontend)
        await turn(bot, USER, "hello", 1)
        await turn(bot, USER, "and again", 2)
        await turn(bot, OTHER, "hi", 1)
        got = samples((await get(server, "/metrics")).text)
        health = await get(server, "/healthz")
        stored = await bot.stored(USER, USER) + await bot.stored(OTHER, OTHER)
        await bot.close()  # the front-end is down: the health check says so
        down = await get(server, "/healthz")
    complete = ("bot_replies_total", (("platform", "telegram"), ("status", "complete")))
    assert got[complete] == 3
    assert got[("bot_replies_total", (("platform", "telegram"), ("status", "failed")))] == 0
    tokens = sum(m.num_generated_tokens for m in stored if m.role == "assistant")
    assert tokens > 0
    assert got[("bot_generated_tokens_total", (("platform", "telegram"),))] == tokens
    assert got[("bot_time_to_first_token_seconds_count", ())] == 3
    assert got[("bot_reply_seconds_count", ())] == 3
    assert got[("bot_queue_depth", ())] == 0
    assert got[("bot_active_generations", ())] == 0
    assert (health.status_code, health.text) == (200, "ok\n")
    assert down.status_code == 503
    assert "telegram" in down.text and "engine" not in down.text


async def test_telegram_errors_are_counted_by_kind(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        bot.tg.inject_retry_after("sendMessage", 1, chat_id=USER)
        bot.tg.inject_error("sendMessage", 502, chat_id=OTHER)
        await turn(bot, USER, "hello", 1)
        await turn(bot, OTHER, "hello", 1)
        errors = bot.app.metrics.snapshot().platform_errors
    assert errors[("telegram", "rate_limited")] == 1
    assert errors[("telegram", "server_error")] == 1
    assert errors[("telegram", "timeout")] == 0


async def test_stats_shows_the_figures_to_admins_only(
    scripted: Scripted, tokenizer: Any, tmp_path: Path
) -> None:
    async with running_bot(scripted.model, tokenizer, tmp_path) as bot:
        await turn(bot, USER, "hello", 1)
        bot.tg.push_command(USER, "stats")
        bot.tg.push_command(ADMIN, "stats")
        await bot.tg.wait_for(lambda: len(bot.tg.chat(USER).texts) >= 2)
        await bot.tg.wait_for(lambda: bot.tg.chat(ADMIN).texts)
    assert bot.tg.chat(USER).texts[-1] == ADMINS_ONLY_STATS
    shown = bot.tg.chat(ADMIN).texts[0]
    assert shown.startswith("Replies: 1 (complete 1)")
    assert "Now: 0 generating, 0 waiting" in shown
