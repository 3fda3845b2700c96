"""Store lists what the chat service needs: SqliteStore offers it, and the service needs no more."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.chat.prompt import PromptBuilder
from bot.chat.service import ChatService, Reply
from bot.config import ChatSettings, GenerationSettings
from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from bot.store.protocol import Store
from bot.store.sqlite import SqliteStore
from bot.types import AnswerDelta, ChatKey, ReplyFinished, ReplyStatus
from tests.support.looping import build_looping_model
from tests.support.models import EOS_ID

ALICE = ChatKey("telegram", "-100", "alice")
BOB = ChatKey("telegram", "-100", "bob")
LOOP_REASONING = "Thinking briefly."
WAIT = 30.0  # seconds before a test that would otherwise hang fails (not a speed check)

STORE_METHODS = frozenset(
    name
    for name, value in vars(Store).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(value)
)


def mismatches(implementation: type) -> list[str]:
    """How `implementation` fails to offer a Store method as the protocol declares it."""
    problems = []
    for name in sorted(STORE_METHODS):
        method = getattr(implementation, name, None)
        if method is None or not inspect.iscoroutinefunction(method):
            problems.append(f"{name}: no such async method")
            continue
        wanted = inspect.signature(getattr(Store, name))
        offered = inspect.signature(method)
        if offered.return_annotation != wanted.return_annotation:
            problems.append(f"{name} returns {offered.return_annotation}")
        for parameter in wanted.parameters.values():
            match = offered.parameters.get(parameter.name)
            if match is None or match.kind != parameter.kind:
                problems.append(f"{name}: no {parameter.kind.description} {parameter.name}")
            elif match.annotation != parameter.annotation:
                problems.append(f"{name}: {parameter.name} is {match.annotation}")
            elif parameter.default is not parameter.empty and match.default is match.empty:
                problems.append(f"{name}: {parameter.name} may not be left out")
        for extra in offered.parameters.keys() - wanted.parameters.keys():
            if offered.parameters[extra].default is inspect.Parameter.empty:
                problems.append(f"{name}: needs {extra}, which callers do not pass")
    return problems


def test_sqlite_store_offers_every_store_method_with_its_signature() -> None:
    assert mismatches(SqliteStore) == []


def test_the_check_finds_a_missing_method_and_a_changed_signature() -> None:
    class Partial(SqliteStore):
        history = None  # type: ignore[assignment]

        async def reset(self, key: ChatKey, *, hard: bool) -> bool:  # type: ignore[override]
            return False

        async def reset_chat(self, platform: str, chat: str) -> int:  # type: ignore[override]
            return 0

    assert mismatches(Partial) == [
        "history: no such async method",
        "reset: needs hard, which callers do not pass",
        "reset_chat: no positional or keyword chat_id",
        "reset_chat: needs chat, which callers do not pass",
    ]


class OnlyTheProtocol:
    """A store that offers its Store methods and nothing else, and records which were used."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name not in STORE_METHODS:
            raise AttributeError(f"the service used {name}, which Store does not list")
        self.used.add(name)
        return getattr(self._store, name)


@pytest.fixture(scope="module")
def looping(tokenizer: Any) -> Any:
    """Writes LOOP_REASONING, </think>, then an answer that never ends."""
    return build_looping_model(tokenizer, f"{LOOP_REASONING}</think>\n\nOn", " and on")


@asynccontextmanager
async def service_on(
    store: OnlyTheProtocol, model: Any, tokenizer: Any
) -> AsyncIterator[ChatService]:
    runner = ModelRunner(model, CacheShape(num_slots=2, slot_tokens=2048), use_cuda_graphs=False)
    engine = LocalEngine(runner, tokenizer, eos_token_ids={EOS_ID}, warm_up=False)
    async with engine:
        service = ChatService(
            store,
            engine,
            PromptBuilder(tokenizer, max_context_tokens=2048, max_new_tokens=1024),
            chat=ChatSettings(system_prompt="Be kind."),
            generation=GenerationSettings(max_new_tokens=1024),
            checkpoint_seconds=0.05,
        )
        try:
            yield service
        finally:
            await service.interrupt_all()


async def stopped_after_a_checkpoint(reply: Reply, service: ChatService, db: SqliteStore) -> str:
    """Read `reply` until its text so far is checkpointed, then stop it; the answer stored."""
    async with asyncio.timeout(WAIT):
        async for event in reply:
            if isinstance(event, AnswerDelta) and await is_checkpointed(db):
                service.stop(reply.key)
            if isinstance(event, ReplyFinished):
                assert event.status is ReplyStatus.STOPPED
                return event.answer
    raise AssertionError("the reply ended without a ReplyFinished")


async def is_checkpointed(db: SqliteStore) -> bool:
    newest = (await db.query_messages())[-1]
    return newest.status == "streaming" and newest.content.startswith("On")


async def test_the_service_works_with_only_what_store_lists(looping, tokenizer, tmp_path: Path):
    async with SqliteStore.open(tmp_path / "bot.db") as db:
        store = OnlyTheProtocol(db)
        async with service_on(store, looping, tokenizer) as service:
            await service.set_system_prompt("telegram", "-100", "Be brief.")
            assert (await service.system_prompt("telegram", "-100")).text == "Be brief."
            reply = await service.start_reply(ALICE, "Tell me a story.")
            await service.set_reply_location(reply, "message 7")
            await stopped_after_a_checkpoint(reply, service, db)
            again = await stopped_after_a_checkpoint(await service.regenerate(ALICE), service, db)
            history = await service.history(ALICE)
            assert [(m.role, m.content) for m in history] == [
                ("user", "Tell me a story."),
                ("assistant", again),
            ]
            await service.reset(ALICE)
            assert await service.history(ALICE) == []
            await service.start_reply(BOB, "Hello?")
            assert await service.reset_chat("telegram", "-100") == 1
        stored = await db.query_messages()

    assert [m.location for m in stored if m.role == "assistant"] == ["message 7", None, None]
    assert [m.superseded_at is not None for m in stored if m.role == "assistant"] == [
        True,
        False,
        False,
    ]
    assert store.used == STORE_METHODS
