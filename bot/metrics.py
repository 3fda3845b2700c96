"""What the bot is doing, for operators: Prometheus series, /healthz, and the admin /stats text.

`Metrics` owns the series (in a registry of its own: two bots in one process, or tests, never
share counts); the chat core reports each finished reply and the front-ends each platform error.
`MetricsServer` serves `/metrics` and `/healthz` on `[metrics] listen:port`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.config import ConfigError, MetricsSettings
from bot.types import ReplyFinished, ReplyStatus

log = logging.getLogger(__name__)

# A reasoning model's first token comes fast when the GPU is free, and after the queue when not.
FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Its answers take from seconds to many minutes (thousands of reasoning tokens).
REPLY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0)


class PlatformErrorKind(enum.StrEnum):
    """What went wrong talking to a chat platform (the `kind` label)."""

    RATE_LIMITED = "rate_limited"  # 429 / RetryAfter
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    NETWORK = "network"  # connection refused, reset, DNS
    FORBIDDEN = "forbidden"  # 403: blocked by the user, no rights in the chat
    NOT_FOUND = "not_found"  # 404: message or chat gone
    BAD_REQUEST = "bad_request"  # 400: e.g. text the platform could not parse
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Distribution:
    """A histogram's figures: how many, their sum, and cumulative counts per upper bound."""

    count: int
    total: float
    buckets: tuple[tuple[float, int], ...]  # (upper bound, observations <= it), +inf last

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile_bound(self, q: float) -> float | None:
        """The smallest bucket bound that at least a share `q` of observations fall under."""
        if not self.count:
            return None
        for bound, cumulative in self.buckets:
            if cumulative >= q * self.count:
                return bound
        return math.inf


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The same figures /metrics serves, for the /stats text."""

    replies: Mapping[tuple[str, str], int]  # (platform, status) -> replies
    generated_tokens: Mapping[str, int]  # platform -> tokens
    queue_depth: int
    active_generations: int
    first_token: Distribution
    reply_time: Distribution
    platform_errors: Mapping[tuple[str, str], int]  # (platform, kind) -> errors

    @property
    def num_replies(self) -> int:
        return sum(self.replies.values())


class Metrics:
    """The bot's Prometheus series, in a registry of their own."""

    def __init__(self, platforms: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._replies = Counter(
            "bot_replies",
            "Replies that ended, by platform and the status they were stored with.",
            ["platform", "status"],
            registry=self.registry,
        )
        self._prompt_tokens = Counter(
            "bot_prompt_tokens",
            "Prompt tokens of finished replies, by platform and by where their KV came from: "
            "reused from the dialogue's previous turn, or computed (prefilled).",
            ["platform", "source"],
            registry=self.registry,
        )
        self._prefix_lookups = Counter(
            "bot_prefix_lookups",
            "Finished replies by whether their prompt found the dialogue's KV of its previous "
            "turn still cached (hit) or was prefilled whole (miss).",
            ["platform", "result"],
            registry=self.registry,
        )
        self._generated_tokens = Counter(
            "bot_generated_tokens",
            "Tokens the model generated (reasoning included), by platform.",
            ["platform"],
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "bot_queue_depth", "Requests waiting for the engine.", registry=self.registry
        )
        self._active = Gauge(
            "bot_active_generations", "Answers being generated now.", registry=self.registry
        )
        self._first_token = Histogram(
            "bot_time_to_first_token_seconds",
            "From a message to its answer's first token (queue included).",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self._reply_time = Histogram(
            "bot_reply_seconds",
            "From a message to the end of its answer.",
            buckets=REPLY_BUCKETS,
            registry=self.registry,
        )
        self._platform_errors = Counter(
            "bot_platform_errors",
            "Failed calls to a chat platform, by platform and kind.",
            ["platform", "kind"],
            registry=self.registry,
        )
        self._read_queue_depth: Callable[[], int] = lambda: 0
        self._read_active: Callable[[], int] = lambda: 0
        self._queue_depth.set_function(lambda: self._read_queue_depth())
        self._active.set_function(lambda: self._read_active())
        for platform in platforms:  # zeros from the start, so dashboards see every series
            self._generated_tokens.labels(platform)
            for source in ("reused", "computed"):
                self._prompt_tokens.labels(platform, source)
            for result in ("hit", "miss"):
                self._prefix_lookups.labels(platform, result)
            for status in ReplyStatus:
                self._replies.labels(platform, status.value)
            for kind in PlatformErrorKind:
                self._platform_errors.labels(platform, kind.value)

    def watch_engine(
        self, *, queue_depth: Callable[[], int], active_generations: Callable[[], int]
    ) -> None:
        """Read the two gauges from these (called at every scrape) from now on."""
        self._read_queue_depth = queue_depth
        self._read_active = active_generations

    def observe_reply(
        self,
        platform: str,
        status: str,
        *,
        generated_tokens: int,
        first_token_seconds: float | None,
        total_seconds: float,
    ) -> None:
        """Count one finished reply (whatever its status) with its figures."""
        self._replies.labels(platform, str(status)).inc()
        if generated_tokens > 0:
            self._generated_tokens.labels(platform).inc(generated_tokens)
        if first_token_seconds is not None:
            self._first_token.observe(first_token_seconds)
        self._reply_time.observe(total_seconds)

    def observe_finished(self, platform: str, final: ReplyFinished) -> None:
        """observe_reply from a reply's final event, and its prompt tokens (reused or not)."""
        reused = min(final.num_reused_tokens, final.num_prompt_tokens)
        if final.num_prompt_tokens:  # 0: it never reached the engine (nothing was looked up)
            self._prefix_lookups.labels(platform, "hit" if reused else "miss").inc()
        if reused:
            self._prompt_tokens.labels(platform, "reused").inc(reused)
        if final.num_prompt_tokens > reused:
            self._prompt_tokens.labels(platform, "computed").inc(final.num_prompt_tokens - reused)
        self.observe_reply(
            platform,
            final.status,
            generated_tokens=final.num_generated_tokens,
            first_token_seconds=final.first_token_seconds,
            total_seconds=final.total_seconds,
        )

    def count_platform_error(self, platform: str, kind: PlatformErrorKind | str) -> None:
        self._platform_errors.labels(platform, str(kind)).inc()

    def snapshot(self) -> MetricsSnapshot:
        """The current figures, read from the registry (what a scrape would see)."""
        replies: dict[tuple[str, str], int] = {}
        tokens: dict[str, int] = {}
        errors: dict[tuple[str, str], int] = {}
        gauges: dict[str, float] = {}
        histograms: dict[str, Distribution] = {}
        for family in self.registry.collect():
            samples = family.samples
            if family.name == "bot_replies":
                for s in _named(samples, "bot_replies_total"):
                    replies[(s.labels["platform"], s.labels["status"])] = int(s.value)
            elif family.name == "bot_generated_tokens":
                for s in _named(samples, "bot_generated_tokens_total"):
                    tokens[s.labels["platform"]] = int(s.value)
            elif family.name == "bot_platform_errors":
                for s in _named(samples, "bot_platform_errors_total"):
                    errors[(s.labels["platform"], s.labels["kind"])] = int(s.value)
            elif family.type == "gauge":
                gauges[family.name] = samples[0].value
            elif family.type == "histogram":
                histograms[family.name] = _distribution(family.name, samples)
        return MetricsSnapshot(
            replies=replies,
            generated_tokens=tokens,
            queue_depth=int(gauges.get("bot_queue_depth", 0)),
            active_generations=int(gauges.get("bot_active_generations", 0)),
            first_token=histograms["bot_time_to_first_token_seconds"],
            reply_time=histograms["bot_reply_seconds"],
            platform_errors=errors,
        )


def format_stats(snapshot: MetricsSnapshot) -> str:
    """The admin /stats text: plain lines, the same on every platform."""
    by_status: dict[str, int] = {}
    by_platform: dict[str, int] = {}
    for (platform, status), count in snapshot.replies.items():
        if count:
            by_status[status] = by_status.get(status, 0) + count
            by_platform[platform] = by_platform.get(platform, 0) + count
    lines = [f"Replies: {_counts(snapshot.num_replies, by_status)}"]
    if len(by_platform) > 1:
        lines.append(
            "By platform: " + ", ".join(f"{p} {n:,}" for p, n in sorted(by_platform.items()))
        )
    lines.append(f"Tokens generated: {sum(snapshot.generated_tokens.values()):,}")
    lines.append(f"Now: {snapshot.active_generations} generating, {snapshot.queue_depth} waiting")
    lines.append(f"First token: {_timing(snapshot.first_token)}")
    lines.append(f"Reply time: {_timing(snapshot.reply_time)}")
    errors = [
        f"{platform} {kind} {count:,}"
        for (platform, kind), count in sorted(snapshot.platform_errors.items())
        if count
    ]
    lines.append("Platform errors: " + (", ".join(errors) if errors else "none"))
    return "\n".join(lines)


HealthCheck = Callable[[], bool]


class MetricsServer:
    """Serves /metrics and /healthz over HTTP; an async context manager.

    /healthz answers 200 when every health check returns true, else 503 naming the failing
    ones (a check that raises fails). Checks may be added while it runs, e.g. one per
    front-end as each starts. `port=0` picks a free port (see `port`): for tests, since the
    config's 0 means no server at all.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        listen: str = "127.0.0.1",
        port: int,
        health_checks: Mapping[str, HealthCheck] | None = None,
    ) -> None:
        self._metrics = metrics
        self._listen = listen
        self._port = port
        self._checks: dict[str, HealthCheck] = dict(health_checks or {})
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    def set_health_check(self, name: str, check: HealthCheck) -> None:
        self._checks[name] = check

    def remove_health_check(self, name: str) -> None:
        self._checks.pop(name, None)

    def failing_checks(self) -> list[str]:
        """The names of the health checks that fail now."""
        failing = []
        for name, check in list(self._checks.items()):
            try:
                is_ok = bool(check())
            except Exception:
                log.debug("health check %s raised", name, exc_info=True)
                is_ok = False
            if not is_ok:
                failing.append(name)
        return failing

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._listen, self._port)
        try:
            await site.start()
        except OSError as error:  # the port is taken, or the address is not this machine's
            await runner.cleanup()
            raise ConfigError(
                f"metrics.port: cannot listen on {self._listen}:{self._port}: "
                f"{error.strerror or error}"
            ) from None
        self._runner = runner
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("metrics on http://%s:%d/metrics", self._listen, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, request: web.Request) -> web.Response:
        failing = self.failing_checks()
        if failing:
            return web.Response(status=503, text="failing: " + ", ".join(failing) + "\n")
        return web.Response(text="ok\n")


def _named(samples: Iterable, name: str) -> list:
    return [sample for sample in samples if sample.name == name]


def _distribution(name: str, samples: list) -> Distribution:
    count = next(s.value for s in samples if s.name == f"{name}_count")
    total = next(s.value for s in samples if s.name == f"{name}_sum")
    buckets = tuple(
        (float(s.labels["le"]), int(s.value)) for s in samples if s.name == f"{name}_bucket"
    )
    return Distribution(int(count), total, buckets)


def _counts(total: int, by_kind: Mapping[str, int]) -> str:
    if not by_kind:
        return f"{total:,}"
    ordered = sorted(by_kind.items(), key=lambda item: (-item[1], item[0]))  # most first
    parts = ", ".join(f"{kind} {n:,}" for kind, n in ordered)
    return f"{total:,} ({parts})"


def _timing(distribution: Distribution) -> str:
    mean = distribution.mean
    if mean is None:
        return "no replies yet"
    p95 = distribution.quantile_bound(0.95)
    within = "more than the longest bucket" if p95 == math.inf else f"within {_seconds(p95)}"
    return f"average {_seconds(mean)}, 95% {within}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.1f} min"


def metrics_server_for(app: Any, *, listen: str = "127.0.0.1", port: int) -> MetricsServer:
    """A MetricsServer for the app's metrics whose /healthz checks its engine from the start;
    each front-end is added by `watch_frontend` once it has started."""
    engine = app.engine
    return MetricsServer(
        app.metrics, listen=listen, port=port, health_checks={"engine": lambda: engine.is_up}
    )


@contextlib.asynccontextmanager
async def serve_metrics(settings: MetricsSettings, app: Any) -> AsyncIterator[MetricsServer | None]:
    """The app's MetricsServer while the bot runs (None when `[metrics] port = 0`)."""
    if not settings.port:
        yield None
        return
    async with metrics_server_for(app, listen=settings.listen, port=settings.port) as server:
        yield server


def watch_frontend(server: MetricsServer | None, frontend: Any) -> None:
    """/healthz fails while this front-end is down (a no-op without a metrics server)."""
    if server is not None:
        server.set_health_check(frontend.name, lambda: frontend.is_up)
