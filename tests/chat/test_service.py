"""ChatService wired by open_app with a real SQLite file and a real LocalEngine on tiny models."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.chat.prompt import PromptTooLong
from bot.chat.service import Reply
from bot.config import ChatSettings, GenerationSettings, ModelSettings, Settings, StorageSettings
from bot.engine.base import GenerationRequest
from bot.engine.local import LocalEngine
from bot.engine.model import DecoderWeights
from bot.engine.runner import CacheShape, ModelRunner
from bot.store.sqlite import SqliteStore
from bot.types import (
    AnswerDelta,
    ChatError,
    ChatKey,
    Queued,
    ReasoningDelta,
    ReplyEvent,
    ReplyFinished,
    ReplyStatus,
    Started,
)
from tests.support.looping import build_looping_model
from tests.support.models import EOS_ID, build_scripted_model

REASONING = "The user greets me, so I greet them back in two languages."
ANSWER = "Hello! 你好 👋 **Nice** to meet you 🙂"
SCRIPT = f"{REASONING}</think>\n\n{ANSWER}"
LOOP_REASONING = "Thinking briefly."
LOOP_ANSWER = "On" + " and on" * 10_000  # for ever, really
DEFAULT_SYSTEM = "You are a helpful assistant."
BOS = "<｜begin▁of▁sentence｜>"
USER = "<｜User｜>"
ALICE = ChatKey("telegram", "-100", "alice")
BOB = ChatKey("telegram", "-100", "bob")
CAROL = ChatKey("telegram", "-100", "carol")
WAIT = 30.0  # seconds before a test that would otherwise hang fails (not a speed check)


@pytest.fixture(scope="module")
def scripted(tokenizer: Any) -> Any:
    """Writes REASONING, </think>, ANSWER, then EOS."""
    return build_scripted_model(tokenizer, SCRIPT)


@pytest.fixture(scope="module")
def looping(tokenizer: Any) -> Any:
    """Writes LOOP_REASONING, </think>, then an answer that never ends."""
    return build_looping_model(tokenizer, f"{LOOP_REASONING}</think>\n\nOn", " and on")


class RecordingEngine(LocalEngine):
    """The real engine; it also keeps every request, so a test can read the prompts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[GenerationRequest] = []

    def submit(self, request: GenerationRequest) -> Any:
        self.requests.append(request)
        return super().submit(request)


def settings_for(db: Path, **sections: dict[str, Any]) -> Settings:
    return Settings(
        model=ModelSettings(
            path="scripted",
            quantization="none",
            device="cpu",
            dtype="float32",
            **{"max_context_tokens": 2048, **sections.get("model", {})},
        ),
        generation=GenerationSettings(**{"max_new_tokens": 1024, **sections.get("generation", {})}),
        storage=StorageSettings(path=str(db), **sections.get("storage", {})),
        chat=ChatSettings(**{"system_prompt": DEFAULT_SYSTEM, **sections.get("chat", {})}),
    )


@contextlib.asynccontextmanager
async def running(
    tiny_model: Any,
    tokenizer: Any,
    db: Path,
    *,
    num_slots: int = 4,
    max_queue: int = 256,
    **sections: dict[str, Any],
) -> AsyncIterator[tuple[App, RecordingEngine]]:
    """The app as `python -m bot` wires it, with a tiny model loaded by the factory."""
    engines: list[RecordingEngine] = []

    def factory(settings: Settings) -> tuple[Any, RecordingEngine]:
        runner = ModelRunner(
            tiny_model, CacheShape(num_slots=num_slots, slot_tokens=2048), use_cuda_graphs=False
        )
        engine = RecordingEngine(
            runner, tokenizer, eos_token_ids={EOS_ID}, max_queue=max_queue, warm_up=False
        )
        engines.append(engine)
        return tokenizer, engine

    async with open_app(settings_for(db, **sections), engine_factory=factory) as app:
        yield app, engines[0]


class Listener:
    """Reads one reply's events, keeping them; waits are bounded so a hang fails the test."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.events: list[ReplyEvent] = []

    async def until(self, kind: type) -> ReplyEvent:
        """Read up to and including the next event of `kind`."""
        async with asyncio.timeout(WAIT):
            async for event in self.reply:
                self.events.append(event)
                if isinstance(event, kind):
                    return event
        raise AssertionError(f"the reply ended without a {kind.__name__}: {self.events}")

    async def finish(self) -> ReplyFinished:
        event = await self.until(ReplyFinished)
        assert isinstance(event, ReplyFinished)
        return event

    def text(self, kind: type) -> str:
        return "".join(e.text for e in self.events if isinstance(e, kind))


async def start(app: App, key: ChatKey, text: str) -> Listener:
    return Listener(await app.service.start_reply(key, text))


async def ask(app: App, key: ChatKey, text: str) -> ReplyFinished:
    """One whole turn."""
    return await (await start(app, key, text)).finish()


def prompt_text(tokenizer: Any, request: GenerationRequest) -> str:
    return tokenizer.decode(list(request.prompt_ids), skip_special_tokens=False)


async def assert_stored_reply(app: App, engine: RecordingEngine, final: ReplyFinished) -> Any:
    """The newest stored message is this reply, with every field the final event had."""
    stored = (await app.store.query_messages())[-1]
    assert stored.role == "assistant"
    assert stored.status == final.status.value
    assert (stored.content, stored.reasoning) == (final.answer, final.reasoning)
    assert stored.num_prompt_tokens == len(engine.requests[-1].prompt_ids)
    assert stored.num_generated_tokens == final.num_generated_tokens
    assert stored.first_token_seconds == final.first_token_seconds
    assert stored.total_seconds == final.total_seconds > 0
    assert stored.finished_at is not None
    return stored


# -- one turn, each way it can end


async def test_a_complete_turn_stores_question_then_answer_and_reasoning_apart(
    scripted, tokenizer, tmp_path
):
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        listener = await start(app, ALICE, "Hi there!")
        final = await listener.finish()
        stored = await app.store.query_messages()

    assert isinstance(listener.events[0], Started)
    assert listener.text(ReasoningDelta) == REASONING
    assert listener.text(AnswerDelta) == ANSWER
    assert (final.status, final.answer, final.reasoning, final.note) == (
        ReplyStatus.COMPLETE,
        ANSWER,
        REASONING,
        None,
    )
    script_tokens = len(tokenizer.encode(SCRIPT, add_special_tokens=False))
    assert final.num_generated_tokens == script_tokens + 1  # and EOS
    assert final.num_prompt_tokens == len(engine.requests[0].prompt_ids)
    assert final.first_token_seconds is not None
    assert 0 < final.first_token_seconds <= final.total_seconds

    question, answer = stored
    assert (question.role, question.content, question.status) == ("user", "Hi there!", "complete")
    assert (answer.role, answer.content, answer.reasoning) == ("assistant", ANSWER, REASONING)
    assert question.id < answer.id and question.conversation_id == answer.conversation_id
    assert answer.num_prompt_tokens == final.num_prompt_tokens
    assert answer.num_generated_tokens == final.num_generated_tokens
    assert (answer.first_token_seconds, answer.total_seconds) == (
        final.first_token_seconds,
        final.total_seconds,
    )


async def test_the_question_is_stored_before_the_answer_is_written(looping, tokenizer, tmp_path):
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, engine):
        listener = await start(app, ALICE, "Tell me a story.")
        # start_reply has returned: the question is stored, before any of the answer arrives.
        assert listener.events == []
        assert [(m.role, m.content) for m in await app.store.query_messages()] == [
            ("user", "Tell me a story."),
            ("assistant", ""),  # its answer's row, empty until the first checkpoint
        ]
        await listener.until(AnswerDelta)
        # The reply has its row from the start, marked as still being written.
        assert [(m.role, m.status) for m in await app.store.query_messages()] == [
            ("user", "complete"),
            ("assistant", "streaming"),
        ]
        assert app.service.stop(ALICE)
        final = await listener.finish()
        await assert_stored_reply(app, engine, final)


async def test_the_answer_so_far_is_checkpointed_while_it_streams(looping, tokenizer, tmp_path):
    async with running(
        looping, tokenizer, tmp_path / "bot.db", storage={"checkpoint_seconds": 0.05}
    ) as (app, engine):
        listener = await start(app, ALICE, "Tell me a story.")
        async with asyncio.timeout(WAIT):
            while True:  # a checkpoint with some of the answer in it
                saved = (await app.store.query_messages())[-1]
                if saved.status == "streaming" and saved.content.startswith("On and on"):
                    break
                await listener.until(AnswerDelta)
        assert saved.reasoning == LOOP_REASONING
        assert app.service.stop(ALICE)
        final = await listener.finish()
        stored = await assert_stored_reply(app, engine, final)

    assert stored.id == saved.id  # the same row, finished: no second copy of the answer
    assert final.status is ReplyStatus.STOPPED and final.answer.startswith(saved.content)


async def test_an_answer_a_killed_bot_left_streaming_is_kept_as_interrupted(
    scripted, tokenizer, tmp_path
):
    db = tmp_path / "bot.db"
    async with SqliteStore.open(db) as store:  # what a bot killed mid-answer leaves behind
        await store.add_user_message(ALICE, "Tell me a story.")
        reply_id = await store.begin_reply(ALICE)
        await store.checkpoint_reply(reply_id, "Once upon a", "A story, then.")

    async with running(scripted, tokenizer, db) as (app, engine):
        [recovered] = app.interrupted
        assert (recovered.key, recovered.reply_id, recovered.answer) == (
            ALICE,
            reply_id,
            "Once upon a",
        )
        await ask(app, ALICE, "Go on.")
        stored = await app.store.query_messages()

    assert [(m.role, m.content, m.status) for m in stored[:2]] == [
        ("user", "Tell me a story.", "complete"),
        ("assistant", "Once upon a", "interrupted"),
    ]
    # The dialogue continues from the text the user saw.
    assert f"{USER}Tell me a story.<｜Assistant｜>Once upon a" in prompt_text(
        tokenizer, engine.requests[0]
    )


async def test_stop_stores_what_the_user_saw_as_stopped(looping, tokenizer, tmp_path):
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, engine):
        listener = await start(app, ALICE, "Go on.")
        await listener.until(AnswerDelta)
        assert app.service.is_answering(ALICE)
        assert app.service.stop(ALICE) is True
        final = await listener.finish()
        stored = await assert_stored_reply(app, engine, final)
        assert not app.service.is_answering(ALICE)
        assert app.service.stop(ALICE) is False  # nothing left to stop

    assert final.status is ReplyStatus.STOPPED and final.note == "(Stopped.)"
    assert final.answer == listener.text(AnswerDelta)  # stored exactly as it was shown
    assert final.answer and LOOP_ANSWER.startswith(final.answer)
    assert stored.reasoning == LOOP_REASONING


async def test_length_limit_stores_the_cut_reply(scripted, tokenizer, tmp_path):
    async with running(
        scripted, tokenizer, tmp_path / "bot.db", generation={"max_new_tokens": 5}
    ) as (app, engine):
        final = await ask(app, ALICE, "Hi!")
        stored = await assert_stored_reply(app, engine, final)

    assert final.status is ReplyStatus.LENGTH
    assert final.num_generated_tokens == 5
    assert "5 tokens" in final.note
    assert final.answer == ""  # cut while still reasoning
    assert REASONING.startswith(stored.reasoning) and stored.reasoning


async def test_timeout_stores_the_reply_as_timed_out(looping, tokenizer, tmp_path):
    async with running(
        looping, tokenizer, tmp_path / "bot.db", generation={"timeout_seconds": 0.25}
    ) as (app, engine):
        final = await ask(app, ALICE, "Go on.")
        await assert_stored_reply(app, engine, final)

    assert final.status is ReplyStatus.TIMEOUT
    assert "0.25 s" in final.note


async def test_shutdown_interrupts_and_stores_every_answer(looping, tokenizer, tmp_path):
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, _engine):
        alice = await start(app, ALICE, "Go on.")
        bob = await start(app, BOB, "Me too.")
        await alice.until(AnswerDelta)
        await bob.until(AnswerDelta)
        await app.service.interrupt_all()
        finals = [await alice.finish(), await bob.finish()]
        stored = await app.store.query_messages()

    assert [f.status for f in finals] == [ReplyStatus.INTERRUPTED] * 2
    assert "restarting" in finals[0].note
    replies = [m for m in stored if m.role == "assistant"]
    assert sorted((m.key.user_id, m.status, m.content) for m in replies) == [
        ("alice", "interrupted", finals[0].answer),
        ("bob", "interrupted", finals[1].answer),
    ]
    assert all(m.num_generated_tokens > 0 and m.total_seconds > 0 for m in replies)


async def test_leaving_the_app_mid_answer_stores_it_as_interrupted(looping, tokenizer, tmp_path):
    db = tmp_path / "bot.db"
    async with running(looping, tokenizer, db) as (app, _engine):
        listener = await start(app, ALICE, "Go on.")
        await listener.until(AnswerDelta)
    final = await listener.finish()
    assert final.status is ReplyStatus.INTERRUPTED
    async with running(looping, tokenizer, db) as (app, _engine):
        stored = await app.store.history(ALICE)
    assert [(m.role, m.status) for m in stored] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]


async def test_an_engine_failure_is_stored_as_failed(tokenizer, tmp_path):
    model = DecoderWeights.from_hf_model(build_scripted_model(tokenizer, SCRIPT))

    def broken(hidden: Any) -> None:
        raise RuntimeError("simulated fault")

    model.lm_head = broken
    async with running(model, tokenizer, tmp_path / "bot.db") as (app, engine):
        final = await ask(app, ALICE, "Hi!")
        await assert_stored_reply(app, engine, final)
        assert not app.service.is_answering(ALICE)
    assert final.status is ReplyStatus.FAILED
    assert "RuntimeError" in final.note and "simulated fault" not in final.note


# -- what goes into the next prompt


async def test_reasoning_is_never_fed_back_into_the_next_prompt(scripted, tokenizer, tmp_path):
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        await ask(app, ALICE, "Hi there!")
        await ask(app, ALICE, "And again?")
    second = prompt_text(tokenizer, engine.requests[1])
    assert second == (
        f"{BOS}{DEFAULT_SYSTEM}{USER}Hi there!<｜Assistant｜>{ANSWER}<｜end▁of▁sentence｜>"
        f"{USER}And again?<｜Assistant｜><think>\n"
    )
    assert REASONING not in second


async def test_the_user_never_sees_the_prompt(scripted, tokenizer, tmp_path):
    """The notebook's skip_prompt=False echoed the prompt: only the model's output is shown."""
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, _engine):
        await ask(app, ALICE, "Hi there!")
        listener = await start(app, ALICE, "Unmistakable question?")
        await listener.finish()
    shown = "".join(e.text for e in listener.events if isinstance(e, ReasoningDelta | AnswerDelta))
    assert shown == REASONING + ANSWER
    for part_of_prompt in ("Unmistakable", "Hi there", DEFAULT_SYSTEM, "<｜", "<think>"):
        assert part_of_prompt not in shown


# -- refusals


async def test_a_second_message_while_answering_is_refused(looping, tokenizer, tmp_path):
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, engine):
        listener = await start(app, ALICE, "Go on.")
        await listener.until(AnswerDelta)
        with pytest.raises(ChatError, match="still answering"):
            await app.service.start_reply(ALICE, "Are you there?")
        with pytest.raises(ChatError, match="still answering"):
            app.service.check_message(ALICE, "Are you there?")
        messages = await app.store.query_messages()
        assert [m.content for m in messages if m.role == "user"] == ["Go on."]
        assert len(engine.requests) == 1
        app.service.stop(ALICE)
        await listener.finish()
        # Once the answer has ended, the next message is taken.
        after = await start(app, ALICE, "Now?")
        app.service.stop(ALICE)
        await after.finish()
        assert [m.content for m in await app.store.history(ALICE)][-2] == "Now?"


# The last one is short in characters but long in tokens (a token for each digit).
@pytest.mark.parametrize("text", ["", "   \n\t ", "x" * 101, "7" * 90])
async def test_empty_or_too_long_messages_are_refused_with_nothing_stored(
    scripted, tokenizer, tmp_path, text
):
    async with running(
        scripted,
        tokenizer,
        tmp_path / "bot.db",
        chat={"max_message_chars": 100, "max_message_tokens": 40},
    ) as (app, engine):
        with pytest.raises(ChatError, match=r"empty|too long"):
            await app.service.start_reply(ALICE, text)
        assert await app.store.query_messages() == []
        assert engine.requests == []
        assert not app.service.is_answering(ALICE)
        # The refusal left nothing behind: the next message is answered.
        assert (await ask(app, ALICE, "Hi!")).status is ReplyStatus.COMPLETE


async def test_a_message_over_the_token_budget_is_refused_with_nothing_stored(
    scripted, tokenizer, tmp_path
):
    async with running(
        scripted,
        tokenizer,
        tmp_path / "bot.db",
        model={"max_context_tokens": 256},
        generation={"max_new_tokens": 64},
    ) as (app, engine):
        with pytest.raises(PromptTooLong, match="too long"):
            await app.service.start_reply(ALICE, "word " * 300)  # short enough in characters
        assert await app.store.query_messages() == []
        assert engine.requests == []
        assert not app.service.is_answering(ALICE)


async def test_messages_over_the_per_user_rate_are_refused_with_nothing_stored(
    scripted, tokenizer, tmp_path
):
    async with running(
        scripted, tokenizer, tmp_path / "bot.db", chat={"messages_per_minute": 2}
    ) as (app, engine):
        await ask(app, ALICE, "One")
        await ask(app, ALICE, "Two")
        with pytest.raises(ChatError, match="the limit is 2 a minute"):
            await app.service.start_reply(ALICE, "Three")
        assert (await ask(app, BOB, "Mine")).status is ReplyStatus.COMPLETE  # per user
        stored = await app.store.query_messages()

    assert [m.content for m in stored if m.role == "user"] == ["One", "Two", "Mine"]
    assert len(engine.requests) == 3


async def test_a_full_queue_refuses_with_nothing_stored(looping, tokenizer, tmp_path):
    async with running(looping, tokenizer, tmp_path / "bot.db", num_slots=1, max_queue=1) as (
        app,
        _engine,
    ):
        alice = await start(app, ALICE, "Go on.")
        await alice.until(AnswerDelta)
        bob = await start(app, BOB, "Me next.")  # waits for the one slot
        assert await bob.until(Queued) == Queued(position=1)
        with pytest.raises(ChatError, match="busy"):
            await app.service.start_reply(CAROL, "And me?")
        assert not app.service.is_answering(CAROL)
        messages = await app.store.query_messages()
        assert [m.key.user_id for m in messages if m.role == "user"] == ["alice", "bob"]
        app.service.stop(ALICE)
        await bob.until(AnswerDelta)  # bob's turn came
        app.service.stop(BOB)
        assert (await alice.finish()).status is ReplyStatus.STOPPED
        assert (await bob.finish()).status is ReplyStatus.STOPPED


# -- dialogues


async def test_reset_starts_a_new_dialogue_and_keeps_the_old_one(scripted, tokenizer, tmp_path):
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        await ask(app, ALICE, "First question")
        await app.service.reset(ALICE)
        assert await app.store.history(ALICE) == []
        await ask(app, ALICE, "Second question")
        stored = await app.store.query_messages()
        history = await app.store.history(ALICE)

    assert [m.content for m in stored] == ["First question", ANSWER, "Second question", ANSWER]
    old, new = {m.conversation_id for m in stored[:2]}, {m.conversation_id for m in stored[2:]}
    assert len(old) == len(new) == 1 and old != new
    assert history == stored[2:]
    assert "First question" not in prompt_text(tokenizer, engine.requests[1])


async def test_reset_mid_answer_stops_it_and_files_it_with_its_question(
    looping, tokenizer, tmp_path
):
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, _engine):
        listener = await start(app, ALICE, "Go on.")
        await listener.until(AnswerDelta)
        await app.service.reset(ALICE)
        final = await listener.finish()
        question, answer = await app.store.query_messages()
        assert await app.store.history(ALICE) == []
    assert final.status is ReplyStatus.STOPPED
    assert answer.conversation_id == question.conversation_id


async def test_a_chats_system_prompt_is_used_and_survives_a_restart(scripted, tokenizer, tmp_path):
    db = tmp_path / "bot.db"
    pirate = "Speak like a pirate."
    async with running(scripted, tokenizer, db) as (app, engine):
        await app.service.set_system_prompt("telegram", "-100", pirate)
        await ask(app, ALICE, "Hi!")
        await ask(app, ChatKey("telegram", "-200", "alice"), "Hi!")  # another chat: the default
        first, other = (prompt_text(tokenizer, r) for r in engine.requests)
    assert first.startswith(f"{BOS}{pirate}{USER}Hi!")
    assert other.startswith(f"{BOS}{DEFAULT_SYSTEM}{USER}Hi!")

    async with running(scripted, tokenizer, db) as (app, engine):
        current = await app.service.system_prompt("telegram", "-100")
        assert (current.text, current.is_custom) == (pirate, True)
        await ask(app, BOB, "Hello?")  # everyone in that chat gets it
        await app.service.set_system_prompt("telegram", "-100", None)
        await ask(app, BOB, "And now?")
        with_pirate, restored = (prompt_text(tokenizer, r) for r in engine.requests)
    assert with_pirate.startswith(f"{BOS}{pirate}{USER}Hello?")
    assert restored.startswith(f"{BOS}{DEFAULT_SYSTEM}{USER}Hello?")


async def test_system_prompt_limits(scripted, tokenizer, tmp_path):
    async with running(
        scripted, tokenizer, tmp_path / "bot.db", model={"max_context_tokens": 256}
    ) as (app, _engine):
        with pytest.raises(ChatError, match="quarter"):
            await app.service.set_system_prompt("telegram", "-100", "word " * 100)
        assert (await app.service.system_prompt("telegram", "-100")).is_custom is False


async def test_two_users_in_one_group_have_separate_dialogues(scripted, tokenizer, tmp_path):
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        await ask(app, ALICE, "Alice asks")
        await ask(app, BOB, "Bob asks")
        await ask(app, ALICE, "Alice again")
        alice = await app.store.history(ALICE)
        bob = await app.store.history(BOB)

    assert [m.content for m in alice] == ["Alice asks", ANSWER, "Alice again", ANSWER]
    assert [m.content for m in bob] == ["Bob asks", ANSWER]
    assert {m.conversation_id for m in alice}.isdisjoint({m.conversation_id for m in bob})
    bobs_prompt, alices_second = (prompt_text(tokenizer, r) for r in engine.requests[1:])
    assert "Alice" not in bobs_prompt
    assert "Alice asks" in alices_second and "Bob" not in alices_second


async def test_a_second_user_is_answered_while_the_first_answer_goes_on(
    looping, tokenizer, tmp_path
):
    """The notebook ran one generate() at a time: the second user waited for the first."""
    async with running(looping, tokenizer, tmp_path / "bot.db") as (app, _engine):
        alice = await start(app, ALICE, "Tell me a long story.")
        await alice.until(AnswerDelta)
        bob = await start(app, BOB, "Quick question?")
        await bob.until(AnswerDelta)
        # Bob's answer is being written, and Alice's goes on beside it.
        assert app.service.is_answering(ALICE)
        seen = len(alice.text(AnswerDelta))
        await alice.until(AnswerDelta)
        assert len(alice.text(AnswerDelta)) > seen
        assert not any(isinstance(e, Queued) for e in bob.events)
        app.service.stop(ALICE)
        app.service.stop(BOB)
        finals = [await alice.finish(), await bob.finish()]
    assert [f.status for f in finals] == [ReplyStatus.STOPPED] * 2
    assert all(f.answer and LOOP_ANSWER.startswith(f.answer) for f in finals)


@pytest.mark.parametrize("num_yields", [1, 2, 3])
async def test_an_answer_still_starting_at_shutdown_is_stored_as_interrupted(
    looping, tokenizer, tmp_path, num_yields
):
    db = tmp_path / "bot.db"
    async with running(looping, tokenizer, db) as (app, _engine):
        starting = asyncio.create_task(app.service.start_reply(ALICE, "Just in time?"))
        for _ in range(num_yields):
            await asyncio.sleep(0)  # start_reply is reading the history when the app closes
        assert app.service.is_answering(ALICE)
    # Closing waited for it: it reached the engine and the store while both were open.
    final = await Listener(await starting).finish()
    assert final.status is ReplyStatus.INTERRUPTED
    async with running(looping, tokenizer, db) as (app, _engine):
        stored = [(m.role, m.content, m.status) for m in await app.store.query_messages()]
    assert stored == [
        ("user", "Just in time?", "complete"),
        ("assistant", final.answer, "interrupted"),
    ]


async def test_messages_after_shutdown_began_are_refused(scripted, tokenizer, tmp_path):
    async with running(scripted, tokenizer, tmp_path / "bot.db") as (app, engine):
        await app.service.interrupt_all()
        with pytest.raises(ChatError, match="restarting"):
            await app.service.start_reply(ALICE, "Hello?")
        assert await app.store.query_messages() == []
        assert engine.requests == []


async def test_the_user_is_told_once_when_older_turns_leave_the_prompt(
    scripted, tokenizer, tmp_path
):
    async with running(
        scripted,
        tokenizer,
        tmp_path / "bot.db",
        model={"max_context_tokens": 320},
        generation={"max_new_tokens": 64},
    ) as (app, engine):
        finals = [await ask(app, ALICE, f"Question {i}: " + "tell me more " * 10) for i in range(6)]
        await app.service.reset(ALICE)
        fresh = await ask(app, ALICE, "A new start")
    notes = [f.note for f in finals]
    trimmed_from = next(i for i, note in enumerate(notes) if note)
    assert trimmed_from > 0, "the first turns fit: nothing to say"
    assert notes[trimmed_from] is not None and "/reset" in notes[trimmed_from]
    assert notes[trimmed_from + 1 :] == [None] * (len(notes) - trimmed_from - 1)  # said once
    assert all(f.status is ReplyStatus.COMPLETE for f in finals)
    assert fresh.note is None
    first_trimmed = prompt_text(tokenizer, engine.requests[trimmed_from])
    assert "Question 0" not in first_trimmed
