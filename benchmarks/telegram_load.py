"""Telegram front-end under load: a few hundred private chats streaming answers at once.

Everything but the model is real: python-telegram-bot long-polls the loopback fake Bot API
(tests/fakes/telegram_api.py), ChatService stores both sides in SQLite, and the front-end
streams with drafts, paced per chat. The model is an instant token source: a fake engine whose
single "decode loop" hands every active stream one word per step (like LocalEngine delivers a
batch per step). It measures
  * the bot's event-loop lag (a ticker task that sleeps 10 ms and records how late it wakes):
    p50 / p99 / max over the run;
  * Bot API calls per second (all, and those Telegram rate-limits);
  * pacing: the smallest gap between two rate-limited calls in one chat (the budget is one per
    [telegram] edit_interval), the number of chats below it, and the 429s the fake's
    Telegram-like flood control answered (per-chat limit on, global limit off).
By default it runs twice: with the fake server on its own thread and event loop, and with the
server on the bot's own loop (--server thread / same-loop). Both are pessimistic: in
production the Bot API runs on another machine, not in this process. One chat is answered
before measuring (the chat template's one-time compilation belongs to startup).

Run: python benchmarks/telegram_load.py [--chats 300] [--out benchmarks/results/telegram_load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from bot.app import open_app
from bot.config import (
    ChatSettings,
    GenerationSettings,
    ModelSettings,
    Settings,
    StorageSettings,
    TelegramSettings,
)
from bot.engine.base import (
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    Started,
    TextDelta,
)
from bot.frontends.telegram_ui.frontend import TelegramFrontend
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeTelegram, FloodLimits
from tests.support import fixture_dir

T = TypeVar("T")
PACED_METHODS = frozenset({"sendMessage", "editMessageText", "sendMessageDraft"})
TICK = 0.010
SLACK = 0.05  # server arrival times vs client send times (one process, shared CPU)
FIRST_CHAT = 10_000


# ------------------------------------------------------------------------------ instant engine


class _Stream:
    """One request's events; `cancel()` ends it at the next step."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.is_cancelled = False
        self.is_done = False
        self.step = 0

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self

    async def __anext__(self) -> EngineEvent:
        if self.is_done:
            raise StopAsyncIteration
        event = await self.events.get()
        if isinstance(event, Finished):
            self.is_done = True
        return event

    def cancel(self) -> None:
        self.is_cancelled = True

    async def aclose(self) -> None:
        self.cancel()


class InstantEngine:
    """Implements the Engine protocol: every `step` seconds each stream gets its next word."""

    def __init__(self, words: list[str], *, step: float) -> None:
        self._words = words
        self._step = step
        self._streams: list[_Stream] = []
        self._task: asyncio.Task[None] | None = None
        self.num_requests = 0

    max_sequence_tokens = 32_768
    max_batch_size = 1_000_000

    async def __aenter__(self) -> InstantEngine:
        self._task = asyncio.create_task(self._decode_loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
        for stream in self._streams:
            stream.events.put_nowait(Finished(FinishReason.SHUTDOWN))

    def submit(self, request: GenerationRequest) -> _Stream:
        stream = _Stream()
        stream.events.put_nowait(Started(num_prompt_tokens=len(request.prompt_ids)))
        self._streams.append(stream)
        self.num_requests += 1
        return stream

    async def _decode_loop(self) -> None:
        while True:
            await asyncio.sleep(self._step)
            still: list[_Stream] = []
            for stream in self._streams:
                if stream.is_cancelled:
                    stream.events.put_nowait(Finished(FinishReason.CANCELLED))
                elif stream.step == len(self._words):
                    stream.events.put_nowait(
                        Finished(FinishReason.EOS, num_generated_tokens=stream.step)
                    )
                else:
                    stream.events.put_nowait(TextDelta(self._words[stream.step]))
                    stream.step += 1
                    still.append(stream)
            self._streams = still


def script(num_reasoning: int, num_answer: int) -> tuple[list[str], str]:
    """The words the engine says, and the text the user finally sees (collapsed reasoning)."""
    reasoning = [f"{'' if i == 0 else ' '}thought{i}" for i in range(num_reasoning)]
    answer = [f"{'' if i == 0 else ' '}word{i}" for i in range(num_answer)]
    return [*reasoning, "</think>\n\n", *answer], "".join(reasoning) + "\n" + "".join(answer)


# ------------------------------------------------------------------------------ fake server


class _DeepBacklogSite(web.SockSite):
    """aiohttp listens with a backlog of 128: a burst of 300 new connections would overflow it
    and the kernel's SYN retries (1 s, 3 s) would show up as late calls. Telegram's servers
    have no such limit, so the fake server gets a deeper one here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", 4096)
        super().__init__(*args, **kwargs)


class Server:
    """The fake Bot API, on this loop or on a thread of its own."""

    def __init__(self, own_thread: bool) -> None:
        self.tg: FakeTelegram | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if own_thread:
            self._loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._loop.run_forever, name="fake-telegram")
            thread.daemon = True
            thread.start()

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn()` on the server's loop."""
        if self._loop is None:
            return await fn()
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(fn), self._loop)
        return await asyncio.wrap_future(future)

    async def start(self) -> FakeTelegram:
        async def start() -> FakeTelegram:
            telegram_api.web = _WebWithDeepBacklog()
            tg = FakeTelegram()
            await tg.start()
            # Telegram's per-chat limit; the global one is off (it would throttle, not measure).
            tg.set_flood_control(FloodLimits(global_per_second=10**9))
            return tg

        self.tg = await self.run(start)
        return self.tg

    async def close(self) -> None:
        if self.tg is not None:
            await self.run(self.tg.close)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class _WebWithDeepBacklog:
    """aiohttp.web for the fake server's module, with a deeper listen backlog."""

    SockSite = _DeepBacklogSite

    def __getattr__(self, name: str) -> Any:
        return getattr(web, name)


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


# ------------------------------------------------------------------------------ measuring


@dataclass
class LagProbe:
    """How late a 10 ms ticker wakes up on the bot's loop."""

    lags: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.lags.append(max(0.0, loop.time() - before - TICK))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def settings_for(tg: FakeTelegram, db: Path, edit_interval: float) -> Settings:
    return Settings(
        model=ModelSettings(path="instant", quantization="none", device="cpu"),
        generation=GenerationSettings(max_new_tokens=4096),
        storage=StorageSettings(path=str(db)),
        chat=ChatSettings(reasoning="collapsed"),
        telegram=TelegramSettings(
            enabled=True, token=tg.token, base_url=tg.base_url, edit_interval=edit_interval
        ),
    )


async def run_load(args: argparse.Namespace, own_thread: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture_dir())
    words, answer = script(args.reasoning_words, args.answer_words)
    engine = InstantEngine(words, step=args.step)
    server = Server(own_thread)
    tg = await server.start()
    chats = list(range(FIRST_CHAT, FIRST_CHAT + args.chats))
    warm_up = [FIRST_CHAT - 1]
    await server.run(lambda: _add_chats(tg, warm_up + chats))
    with tempfile.TemporaryDirectory() as folder:
        settings = settings_for(tg, Path(folder) / "bot.db", args.edit_interval)
        async with open_app(settings, engine_factory=lambda _: (tokenizer, engine)) as app:
            frontend = TelegramFrontend(
                settings.telegram,
                app.service,
                chat=settings.chat,
                global_calls_per_second=args.global_rate or None,
            )
            await frontend.start()
            # One answer first: the chat template's one-time compilation (~0.1 s) is startup.
            await server.run(lambda: _push_all(tg, warm_up))
            await _wait_done(server, tg, warm_up, answer, frontend, args.timeout)
            if args.gc_freeze:
                gc.freeze()  # as `python -m bot run` does once everything is loaded
            probe = LagProbe()
            probe.start()
            started = time.monotonic()
            await server.run(lambda: _push_all(tg, chats))
            done = await _wait_done(server, tg, chats, answer, frontend, args.timeout)
            elapsed = time.monotonic() - started
            probe.stop()
            await frontend.close()
    calls = await server.run(lambda: _snapshot(tg))
    await server.close()
    return _report(args, own_thread, calls, probe, elapsed, done, started)


async def _add_chats(tg: FakeTelegram, chats: list[int]) -> None:
    for chat in chats:
        tg.add_chat(chat)


async def _push_all(tg: FakeTelegram, chats: list[int]) -> None:
    for chat in chats:
        tg.push_text(chat, f"question from {chat}")


async def _wait_done(
    server: Server,
    tg: FakeTelegram,
    chats: list[int],
    answer: str,
    frontend: TelegramFrontend,
    timeout: float,
) -> int:
    """Until every chat shows the whole final text (and nothing is still being shown)."""

    async def count() -> int:
        return sum(1 for chat in chats if tg.chat(chat).texts[-1:] == [answer])

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await server.run(count)
        if done == len(chats) and frontend.num_answering == 0:
            return done
        await asyncio.sleep(0.25)
    return await server.run(count)


async def _snapshot(tg: FakeTelegram) -> list[tuple[float, str, Any, int | None]]:
    return [(c.at, c.method, c.chat_id, c.status) for c in tg.calls]


def _report(
    args: argparse.Namespace,
    own_thread: bool,
    calls: list[tuple[float, str, Any, int | None]],
    probe: LagProbe,
    elapsed: float,
    done: int,
    started: float,
) -> dict[str, Any]:
    calls = [c for c in calls if c[0] >= started and c[1] != "getUpdates"]
    by_method: dict[str, int] = defaultdict(int)
    per_chat: dict[Any, list[float]] = defaultdict(list)
    num_429 = 0
    for at, method, chat_id, status in calls:
        by_method[method] += 1
        if method in PACED_METHODS:
            per_chat[chat_id].append(at)
            num_429 += status == 429
    gaps = {
        chat: min((b - a for a, b in itertools.pairwise(times)), default=float("inf"))
        for chat, times in per_chat.items()
    }
    min_gap = min(gaps.values())
    too_fast = sorted(chat for chat, gap in gaps.items() if gap < args.edit_interval - SLACK)
    num_paced = sum(by_method[m] for m in PACED_METHODS)
    lags_ms = [lag * 1000 for lag in probe.lags]
    return {
        "server": "own thread" if own_thread else "same loop",
        "chats": args.chats,
        "edit_interval_s": args.edit_interval,
        "words_per_answer": args.reasoning_words + args.answer_words + 1,
        "engine_step_s": args.step,
        "global_rate_limit": args.global_rate or None,
        "gc_freeze": args.gc_freeze,
        "answers_complete": done,
        "duration_s": round(elapsed, 2),
        "loop_lag_ms": {
            "p50": round(percentile(lags_ms, 50), 2),
            "p99": round(percentile(lags_ms, 99), 2),
            "max": round(max(lags_ms), 2),
            "samples": len(lags_ms),
        },
        "calls": dict(sorted(by_method.items())),
        "calls_per_s": round(len(calls) / elapsed, 1),
        "paced_calls_per_s": round(num_paced / elapsed, 1),
        "pacing": {
            "min_gap_s": round(min_gap, 3),
            "chats_paced_faster_than_budget": len(too_fast),
            "flood_control_429s": num_429,
        },
    }


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("server", lambda r: r["server"]),
        ("chats / complete", lambda r: f"{r['chats']} / {r['answers_complete']}"),
        ("duration s", lambda r: f"{r['duration_s']:.1f}"),
        ("loop lag p50 ms", lambda r: f"{r['loop_lag_ms']['p50']:.1f}"),
        ("loop lag p99 ms", lambda r: f"{r['loop_lag_ms']['p99']:.1f}"),
        ("loop lag max ms", lambda r: f"{r['loop_lag_ms']['max']:.1f}"),
        ("calls/s (all)", lambda r: f"{r['calls_per_s']:.0f}"),
        ("calls/s (rate-limited)", lambda r: f"{r['paced_calls_per_s']:.0f}"),
        ("min gap in a chat s", lambda r: f"{r['pacing']['min_gap_s']:.3f}"),
        ("chats paced too fast", lambda r: str(r["pacing"]["chats_paced_faster_than_budget"])),
        ("429s", lambda r: str(r["pacing"]["flood_control_429s"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"{name:<{width}}  " + "  ".join(f"{cell(r):>12}" for r in results) for name, cell in rows
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--edit-interval", type=float, default=1.0)
    parser.add_argument("--reasoning-words", type=int, default=80)
    parser.add_argument("--answer-words", type=int, default=160)
    parser.add_argument("--step", type=float, default=0.02, help="seconds per engine step")
    parser.add_argument(
        "--global-rate",
        type=int,
        default=0,
        help="bot-wide calls/s limit (0 = off, to measure the bot at full load)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave startup objects to the cyclic GC (gen-2 pauses of 0.1-0.2 s)",
    )
    parser.add_argument("--server", choices=["thread", "same-loop", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/telegram_load.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    modes = {"thread": [True], "same-loop": [False], "both": [True, False]}[args.server]
    results = [asyncio.run(run_load(args, own_thread)) for own_thread in modes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "telegram_load",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(_table(results))
    print(f"written to {args.out}")
    failed = [
        r
        for r in results
        if r["answers_complete"] != r["chats"] or r["pacing"]["chats_paced_faster_than_budget"]
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
