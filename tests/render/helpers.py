"""Test doubles for the render layer: a virtual clock, a platform-like sink, an HTML checker."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, TypeVar

from bot.render.delivery import NotModified
from bot.types import ReplyEvent
from tests.fakes.telegram_html import parse_html

T = TypeVar("T")

# Enough event-loop turns for every task woken by a timer to run until it waits again.
_SETTLE_TURNS = 100


class FakeClock:
    """Virtual time: sleep() returns when advance()/drive() moves the clock to its deadline."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(seconds, 0.0), next(self._seq), future))
        await future  # cancelled with the sleeper; _fire skips it

    async def settle(self) -> None:
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)

    def _next_timer(self) -> float | None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def _fire_next(self) -> None:
        when, _, future = heapq.heappop(self._timers)
        self.now = max(self.now, when)
        future.set_result(None)
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper on the way in order."""
        target = self.now + seconds
        await self.settle()
        while (when := self._next_timer()) is not None and when <= target:
            await self._fire_next()
        self.now = max(self.now, target)
        await self.settle()

    async def drive(self, awaitable: Awaitable[T], *, limit: float = 3600.0) -> T:
        """Run `awaitable` to its end, jumping from timer to timer (at most `limit` seconds)."""
        task = asyncio.ensure_future(awaitable)
        end = self.now + limit
        while True:
            await self.settle()
            if task.done():
                return task.result()
            when = self._next_timer()
            if when is None:
                task.cancel()
                raise AssertionError("deadlock: the task waits but no timer is pending")
            if when > end:
                task.cancel()
                raise AssertionError(f"not done after {limit} virtual seconds")
            await self._fire_next()


@dataclass(frozen=True)
class Call:
    """One call the sink received."""

    time: float
    index: int
    text: str
    final: bool
    outcome: str  # "ok", "not modified", or the exception's class name


@dataclass
class _Rule:
    error: BaseException
    when: Callable[[int, str, bool], bool]
    times: int


@dataclass
class FakeSink:
    """Behaves like a chat platform: messages appear in order, size limit, 'not modified'."""

    clock: FakeClock
    limit: int = 4096
    measure: Callable[[str], int] = len
    latency: float = 0.0
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, str] = field(default_factory=dict)
    finals: dict[int, bool] = field(default_factory=dict)
    max_concurrent: int = 0
    _rules: list[_Rule] = field(default_factory=list)
    _concurrent: int = 0

    def fail(
        self,
        error: BaseException,
        *,
        when: Callable[[int, str, bool], bool] = lambda index, text, final: True,
        times: int = 1,
    ) -> None:
        """Raise `error` on the next `times` calls that match `when` (times=-1: always)."""
        self._rules.append(_Rule(error, when, times))

    def _scripted_error(self, index: int, text: str, final: bool) -> BaseException | None:
        for rule in self._rules:
            if rule.times != 0 and rule.when(index, text, final):
                rule.times -= 1
                return rule.error
        return None

    async def show(self, index: int, text: str, *, final: bool) -> None:
        self._concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            if self.latency:
                await self.clock.sleep(self.latency)
            await self._show(index, text, final)
        finally:
            self._concurrent -= 1

    async def _show(self, index: int, text: str, final: bool) -> None:
        now = self.clock.monotonic()
        error = self._scripted_error(index, text, final)
        if error is not None:
            self.calls.append(Call(now, index, text, final, type(error).__name__))
            raise error
        assert index <= len(self.messages), f"message {index} before message {len(self.messages)}"
        assert text.strip(), "empty message text"
        assert self.measure(text) <= self.limit, f"message too long: {self.measure(text)}"
        if self.messages.get(index) == text:
            self.calls.append(Call(now, index, text, final, "not modified"))
            self.finals[index] = self.finals.get(index, False) or final
            raise NotModified
        self.calls.append(Call(now, index, text, final, "ok"))
        self.messages[index] = text
        self.finals[index] = final

    def calls_to(self, index: int) -> list[Call]:
        return [call for call in self.calls if call.index == index]


async def scripted(
    clock: FakeClock, steps: Sequence[tuple[float, Any]]
) -> AsyncIterator[ReplyEvent]:
    """Yield events at virtual times: steps are (seconds after the previous event, event).

    An asyncio.Event as the event waits for the test to set it (a stall).
    """
    for delay, event in steps:
        if delay:
            await clock.sleep(delay)
        if isinstance(event, asyncio.Event):
            await event.wait()
            continue
        yield event


# -- Telegram HTML -----------------------------------------------------------------------------

_ALLOWED_ATTRIBUTES = {
    "b": set(),
    "i": set(),
    "s": set(),
    "u": set(),
    "code": {"class"},
    "pre": set(),
    "a": {"href"},
    "blockquote": {"expandable"},
}
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_TAG = re.compile(r"<[^>]*>")


class _StrictChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in _ALLOWED_ATTRIBUTES, f"tag <{tag}> is not Telegram's"
        for name, value in attrs:
            assert name in _ALLOWED_ATTRIBUTES[tag], f"<{tag} {name}> is not allowed"
            if name == "class":
                assert value and value.startswith("language-"), value
                assert self.stack[-1:] == ["pre"], "a language needs <pre><code>"
        if self.stack and self.stack[-1] in ("code", "pre") and tag != "code":
            raise AssertionError(f"<{tag}> inside <{self.stack[-1]}>")
        if tag == "blockquote":
            assert "blockquote" not in self.stack, "nested blockquote"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> does not close {self.stack}"
        self.stack.pop()


def assert_telegram_html(html: str) -> None:
    """The text is valid Telegram HTML: our own strict checks plus the fake server's parser."""
    outside_tags = _TAG.sub("", html)
    assert "<" not in outside_tags and ">" not in outside_tags, html
    assert outside_tags.count("&") == len(_ENTITY.findall(outside_tags)), f"raw & in {html!r}"
    checker = _StrictChecker()
    checker.feed(html)
    checker.close()
    assert not checker.stack, f"unclosed {checker.stack} in {html!r}"
    parse_html(html)  # raises EntityParseError as Telegram would


# -- random Markdown ---------------------------------------------------------------------------

_WORDS = [
    "a",
    "to",
    "the",
    "model",
    "token",
    "😀",
    "naïve",
    "x=1",
    "**b**",
    "`c`",
    "_i_",
    "<tag>",
    "&",
]


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def random_markdown(rng: random.Random) -> str:
    """Paragraphs, lists, quotes, code fences (some unclosed at the end), very long words."""
    blocks: list[str] = []
    num_blocks = rng.randint(1, 10)
    for b in range(num_blocks):
        kind = rng.choice(["para", "para", "list", "code", "code", "quote", "heading", "long"])
        if kind == "para":
            lines = [_words(rng, 1, 30) for _ in range(rng.randint(1, 3))]
            blocks.append("\n".join(lines))
        elif kind == "list":
            blocks.append("\n".join(f"- {_words(rng, 1, 8)}" for _ in range(rng.randint(1, 5))))
        elif kind == "quote":
            blocks.append("\n".join(f"> {_words(rng, 1, 8)}" for _ in range(rng.randint(1, 3))))
        elif kind == "heading":
            blocks.append(f"## {_words(rng, 1, 5)}")
        elif kind == "long":
            blocks.append("w" * rng.randint(20, 250))
        else:
            marker = rng.choice(["```", "```", "~~~", "````"])
            lang = rng.choice(["", "py", "js", "c++", "rust"])
            lines = [
                " " * rng.choice([0, 0, 2, 4, 8]) + _words(rng, 0, 12)
                for _ in range(rng.randint(1, 12))
            ]
            is_last = b == num_blocks - 1
            closing = [] if (is_last and rng.random() < 0.5) else [marker]
            blocks.append("\n".join([marker + lang, *lines, *closing]))
    return "".join(block + rng.choice(["\n\n", "\n\n", "\n", "\n\n\n"]) for block in blocks)


SAMPLE = """# Plan

Some **bold text with `code` inside** and *italic [a link](https://t.me/x)*.

1. First step
2. Second step with ~~strike~~
   - nested & escaped <b>

> A quote with **bold**

```python
def f(x):
    return x < 2 and "&amp;"
```

| col | other |
|-----|-------|
| 1   | two   |

Last paragraph ** unclosed bold and `unclosed code and [unclosed link](https://exa
"""
