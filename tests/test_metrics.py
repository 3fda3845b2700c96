"""Metrics: the series scraped over real HTTP, /healthz, the /stats text."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError
from bot.metrics import (
    FIRST_TOKEN_BUCKETS,
    Metrics,
    MetricsServer,
    PlatformErrorKind,
    format_stats,
)
from bot.types import ReplyFinished, ReplyStatus

SERIES = {
    "bot_replies_total",
    "bot_generated_tokens_total",
    "bot_prompt_tokens_total",
    "bot_prefix_lookups_total",
    "bot_queue_depth",
    "bot_active_generations",
    "bot_time_to_first_token_seconds",
    "bot_reply_seconds",
    "bot_platform_errors_total",
}


def a_few_turns(metrics: Metrics) -> None:
    metrics.observe_reply(
        "telegram", "complete", generated_tokens=120, first_token_seconds=0.4, total_seconds=12.0
    )
    metrics.observe_reply(
        "telegram", "complete", generated_tokens=80, first_token_seconds=0.6, total_seconds=8.0
    )
    metrics.observe_reply(
        "discord", "stopped", generated_tokens=30, first_token_seconds=1.5, total_seconds=4.0
    )
    # A reply that failed before its first token: counted, with no first-token time.
    metrics.observe_finished(
        "discord",
        ReplyFinished(ReplyStatus.FAILED, answer="", reasoning="", total_seconds=0.5),
    )
    metrics.count_platform_error("telegram", PlatformErrorKind.RATE_LIMITED)
    metrics.count_platform_error("telegram", PlatformErrorKind.RATE_LIMITED)
    metrics.count_platform_error("discord", "server_error")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(server: MetricsServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{server.port}{path}")


async def test_metrics_scraped_over_http_show_the_turns():
    metrics = Metrics()
    a_few_turns(metrics)
    metrics.watch_engine(queue_depth=lambda: 3, active_generations=lambda: 5)
    async with MetricsServer(metrics, port=0) as server:
        response = await scrape(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("bot_replies_total", (("platform", "telegram"), ("status", "complete")))] == 2
    assert got[("bot_replies_total", (("platform", "discord"), ("status", "stopped")))] == 1
    assert got[("bot_replies_total", (("platform", "discord"), ("status", "failed")))] == 1
    assert got[("bot_generated_tokens_total", (("platform", "telegram"),))] == 200
    assert got[("bot_generated_tokens_total", (("platform", "discord"),))] == 30
    assert got[("bot_queue_depth", ())] == 3
    assert got[("bot_active_generations", ())] == 5
    assert got[("bot_time_to_first_token_seconds_count", ())] == 3  # the failed one had none
    assert got[("bot_time_to_first_token_seconds_sum", ())] == pytest.approx(2.5)
    assert got[("bot_time_to_first_token_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("bot_reply_seconds_count", ())] == 4
    assert got[("bot_reply_seconds_sum", ())] == pytest.approx(24.5)
    errors = "bot_platform_errors_total"
    assert got[(errors, (("kind", "rate_limited"), ("platform", "telegram")))] == 2
    assert got[(errors, (("kind", "server_error"), ("platform", "discord")))] == 1


async def test_exactly_the_documented_series_are_served():
    metrics = Metrics(platforms=("telegram",))
    async with MetricsServer(metrics, port=0) as server:
        text = (await scrape(server, "/metrics")).text
    names = {
        s.name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }
    assert names == SERIES
    got = samples(text)
    # Known platforms start at zero for every status, so dashboards see them at once.
    for status in ReplyStatus:
        assert got[("bot_replies_total", (("platform", "telegram"), ("status", status)))] == 0


def test_each_metrics_object_counts_on_its_own():
    first, second = Metrics(), Metrics()
    a_few_turns(first)
    assert first.snapshot().num_replies == 4
    assert second.snapshot().num_replies == 0


def test_the_histograms_reach_several_minutes():
    metrics = Metrics()
    assert max(FIRST_TOKEN_BUCKETS) >= 120
    metrics.observe_reply(
        "console", "complete", generated_tokens=9000, first_token_seconds=0.2, total_seconds=14 * 60
    )
    reply_time = metrics.snapshot().reply_time
    assert reply_time.quantile_bound(0.5) == 900.0  # a 14-minute answer has its own bucket


# -- the /stats text


def test_snapshot_has_the_same_figures_as_the_scrape():
    metrics = Metrics()
    a_few_turns(metrics)
    metrics.watch_engine(queue_depth=lambda: 2, active_generations=lambda: 7)
    snapshot = metrics.snapshot()
    assert snapshot.replies[("telegram", "complete")] == 2
    assert snapshot.num_replies == 4
    assert snapshot.generated_tokens == {"telegram": 200, "discord": 30}
    assert (snapshot.queue_depth, snapshot.active_generations) == (2, 7)
    assert snapshot.first_token.count == 3
    assert snapshot.first_token.mean == pytest.approx(2.5 / 3)
    assert snapshot.first_token.quantile_bound(0.5) == 1.0
    assert snapshot.reply_time.count == 4
    assert snapshot.platform_errors == {
        ("telegram", "rate_limited"): 2,
        ("discord", "server_error"): 1,
    }


def test_the_stats_text():
    metrics = Metrics()
    a_few_turns(metrics)
    metrics.watch_engine(queue_depth=lambda: 2, active_generations=lambda: 7)
    assert format_stats(metrics.snapshot()) == (
        "Replies: 4 (complete 2, failed 1, stopped 1)\n"
        "By platform: discord 2, telegram 2\n"
        "Tokens generated: 230\n"
        "Now: 7 generating, 2 waiting\n"
        "First token: average 0.8 s, 95% within 2.5 s\n"
        "Reply time: average 6.1 s, 95% within 20 s\n"
        "Platform errors: discord server_error 1, telegram rate_limited 2"
    )


def test_the_stats_text_before_any_reply():
    assert format_stats(Metrics(platforms=("telegram",)).snapshot()) == (
        "Replies: 0\n"
        "Tokens generated: 0\n"
        "Now: 0 generating, 0 waiting\n"
        "First token: no replies yet\n"
        "Reply time: no replies yet\n"
        "Platform errors: none"
    )


# -- /healthz


async def test_healthz_flips_to_503_naming_what_is_down():
    up = {"engine": True, "telegram": True, "discord": True}
    checks = {name: (lambda name=name: up[name]) for name in up}
    async with MetricsServer(Metrics(), port=0, health_checks=checks) as server:
        healthy = await scrape(server, "/healthz")
        up["telegram"] = False
        down = await scrape(server, "/healthz")
        up["engine"] = False
        both = await scrape(server, "/healthz")
        up.update(engine=True, telegram=True)
        back = await scrape(server, "/healthz")
    assert (healthy.status_code, healthy.text) == (200, "ok\n")
    assert (down.status_code, down.text) == (503, "failing: telegram\n")
    assert (both.status_code, both.text) == (503, "failing: engine, telegram\n")
    assert back.status_code == 200


async def test_a_health_check_that_raises_fails_and_checks_can_come_later():
    def broken() -> bool:
        raise RuntimeError("no state yet")

    async with MetricsServer(Metrics(), port=0) as server:
        assert (await scrape(server, "/healthz")).status_code == 200  # nothing to check yet
        server.set_health_check("discord", broken)
        failing = await scrape(server, "/healthz")
        server.set_health_check("discord", lambda: True)
        fixed = await scrape(server, "/healthz")
        server.set_health_check("telegram", lambda: False)
        server.remove_health_check("telegram")
        removed = await scrape(server, "/healthz")
    assert (failing.status_code, failing.text) == (503, "failing: discord\n")
    assert fixed.status_code == removed.status_code == 200


async def test_a_port_that_cannot_be_listened_on_names_metrics_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"^metrics.port: cannot listen on 127.0.0.1:{port}:"
        ):
            async with MetricsServer(Metrics(), listen="127.0.0.1", port=port):
                pass


async def test_the_server_stops_listening_when_closed():
    async with MetricsServer(Metrics(), port=0) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")


async def test_prompt_tokens_are_counted_as_reused_or_computed():
    metrics = Metrics(platforms=("telegram",))
    for reused in (0, 900):  # a first turn, then one that found its dialogue's KV in the slot
        metrics.observe_finished(
            "telegram",
            ReplyFinished(
                ReplyStatus.COMPLETE,
                answer="a",
                reasoning="",
                num_prompt_tokens=1000,
                num_generated_tokens=10,
                total_seconds=1.0,
                num_reused_tokens=reused,
            ),
        )
    async with MetricsServer(metrics, port=0) as server:
        got = samples((await scrape(server, "/metrics")).text)
    telegram = ("platform", "telegram")
    assert got[("bot_prompt_tokens_total", (telegram, ("source", "reused")))] == 900
    assert got[("bot_prompt_tokens_total", (telegram, ("source", "computed")))] == 1100
    assert got[("bot_prefix_lookups_total", (telegram, ("result", "hit")))] == 1
    assert got[("bot_prefix_lookups_total", (telegram, ("result", "miss")))] == 1
