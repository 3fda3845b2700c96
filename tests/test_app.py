"""open_app, the one lifespan: front-ends start last and stop first, in the one shutdown order;
every answer is stored before the engine and the store close, even when a platform hangs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from bot.frontends.base import StartupError
from bot.store.records import InterruptedReply
from bot.types import AnswerDelta, ChatError, ChatKey, ReplyStatus
from tests.chat.test_service import settings_for
from tests.support.looping import build_looping_model
from tests.support.models import EOS_ID

ALICE = ChatKey("telegram", "1", "alice")
WAIT = 30.0  # seconds before a test that would otherwise hang fails (not a speed check)


@pytest.fixture(scope="module")
def looping(tokenizer: Any) -> Any:
    """An answer that never ends (until it is stopped or the bot shuts down)."""
    return build_looping_model(tokenizer, "Hmm.</think>\n\nOn", " and on")


def factory_for(model: Any, tokenizer: Any) -> Any:
    def factory(settings: Any) -> tuple[Any, LocalEngine]:
        runner = ModelRunner(
            model, CacheShape(num_slots=2, slot_tokens=2048), use_cuda_graphs=False
        )
        return tokenizer, LocalEngine(runner, tokenizer, eos_token_ids={EOS_ID}, warm_up=False)

    return factory


class RecordingFrontend:
    """A front-end that writes what the lifespan asks of it, and what it found then, to `log`."""

    def __init__(self, name: str, app: App, log: list[str], *, hangs_on_close: bool = False):
        self.name = name
        self.is_up = False
        self._app = app
        self._log = log
        self._hangs_on_close = hangs_on_close

    async def start(self) -> None:
        self.is_up = True
        self._log.append(f"{self.name} start")

    async def announce_interrupted(self, interrupted: Sequence[InterruptedReply]) -> None:
        self._log.append(f"{self.name} announce {len(interrupted)}")

    async def stop_receiving(self) -> None:
        self._log.append(f"{self.name} stop receiving")

    async def close(self) -> None:
        # What a front-end lands on screen must be what is stored: the answers are cut first.
        statuses = [m.status for m in await self._app.store.query_messages() if m.role != "user"]
        self._log.append(f"{self.name} close: engine up {self._app.engine.is_up}, {statuses}")
        if self._hangs_on_close:
            await asyncio.Event().wait()  # a platform that never answers
        self.is_up = False


async def until_answering(app: App) -> Any:
    reply = await app.service.start_reply(ALICE, "Tell me a story.")
    async with asyncio.timeout(WAIT):
        async for event in reply:
            if isinstance(event, AnswerDelta):
                return reply
    raise AssertionError("the answer ended before it began")


async def test_shutdown_stops_taking_messages_cuts_answers_then_closes_frontends_in_reverse(
    looping, tokenizer, tmp_path: Path
) -> None:
    log: list[str] = []

    def frontends(app: App) -> list[RecordingFrontend]:
        return [RecordingFrontend(name, app, log) for name in ("first", "second")]

    settings = settings_for(tmp_path / "bot.db")
    factory = factory_for(looping, tokenizer)
    async with open_app(settings, engine_factory=factory, frontends=frontends) as app:
        assert [f.name for f in app.frontends] == ["first", "second"]
        reply = await until_answering(app)
        assert not app.shutdown.is_closing
    final = await reply.finished()

    assert log == [
        "first start",
        "first announce 0",
        "second start",
        "second announce 0",
        "first stop receiving",
        "second stop receiving",
        "second close: engine up True, ['interrupted']",
        "first close: engine up True, ['interrupted']",
    ]
    assert final.status is ReplyStatus.INTERRUPTED
    assert app.shutdown.is_closing and app.shutdown.is_in_time
    assert app.store.is_closed and not app.engine.is_up
    with pytest.raises(ChatError, match="restarting"):
        app.service.check_message(ALICE, "Still there?")


async def test_a_frontend_that_hangs_on_close_is_left_after_the_grace_period(
    looping, tokenizer, tmp_path: Path
) -> None:
    log: list[str] = []

    def frontends(app: App) -> list[RecordingFrontend]:
        return [RecordingFrontend("stuck", app, log, hangs_on_close=True)]

    db = tmp_path / "bot.db"
    settings = settings_for(db, chat={"shutdown_grace_seconds": 0.1})
    factory = factory_for(looping, tokenizer)
    async with asyncio.timeout(WAIT):
        async with open_app(settings, engine_factory=factory, frontends=frontends) as app:
            await until_answering(app)

    assert not app.shutdown.is_in_time  # the command line exits at once (os._exit)
    assert app.store.is_closed and not app.engine.is_up
    # Stored before the store closed, although the platform never let go.
    settings = settings_for(db)
    async with open_app(settings, engine_factory=factory) as again:
        messages = await again.service.history(ALICE)
        assert again.interrupted == []  # nothing was left streaming
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]


async def test_a_frontend_that_fails_to_start_shuts_down_those_started(
    looping, tokenizer, tmp_path: Path
) -> None:
    log: list[str] = []

    class Refused(RecordingFrontend):
        async def start(self) -> None:
            raise RuntimeError("401 Unauthorized")

    def frontends(app: App) -> list[RecordingFrontend]:
        return [RecordingFrontend("first", app, log), Refused("second", app, log)]

    settings = settings_for(tmp_path / "bot.db")
    factory = factory_for(looping, tokenizer)
    with pytest.raises(StartupError) as raised:
        async with open_app(settings, engine_factory=factory, frontends=frontends):
            raise AssertionError("the app must not be served without all its front-ends")

    assert str(raised.value) == "second could not start: RuntimeError: 401 Unauthorized"
    assert log == [
        "first start",
        "first announce 0",
        "first stop receiving",
        "first close: engine up True, []",
    ]
    assert (tmp_path / "bot.db").exists()  # the store had opened: the file is the bot's


async def test_answers_a_killed_bot_left_are_announced_by_each_frontend(
    looping, tokenizer, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    settings = settings_for(db)
    factory = factory_for(looping, tokenizer)
    async with open_app(settings, engine_factory=factory) as app:
        await app.store.add_user_message(ALICE, "Hello?")
        await app.store.begin_reply(ALICE)  # as a killed bot leaves it: still streaming
    log: list[str] = []

    def frontends(app: App) -> list[RecordingFrontend]:
        return [RecordingFrontend("only", app, log)]

    async with open_app(settings, engine_factory=factory, frontends=frontends) as app:
        assert [r.key for r in app.interrupted] == [ALICE]
    assert log[:2] == ["only start", "only announce 1"]
