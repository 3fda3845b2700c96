"""OpenAIEngine against a loopback server that speaks the OpenAI streaming (SSE) protocol."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys

import pytest

from bot.chat.reasoning import ReasoningSplitter
from bot.config import ModelSettings, OpenAISettings, Settings
from bot.engine.base import (
    EngineBusy,
    EngineError,
    FinishReason,
    GenerationRequest,
    Queued,
    SamplingParams,
    Started,
    TextDelta,
)
from bot.engine.openai_wire import ReasoningForm, RetryPolicy
from bot.engine.remote import OpenAIEngine
from bot.engine.remote_factory import build_openai_engine
from bot.types import AnswerDelta, ChatMessage, ReasoningDelta
from tests.engine.streams import HANG_GUARD_SECONDS, Reader, collect
from tests.fakes.openai_api import (
    DEFAULT_MODEL,
    Comment,
    Cut,
    Delta,
    Done,
    ErrorEvent,
    FakeOpenAI,
    Finish,
    Hold,
    Refuse,
    Usage,
    answer_steps,
)
from tests.support.configs import REPO, bot_env

API_KEY = "sk-remote-test-5f4e3d2c1b0a"
REASONING = "The user greets me; I should answer politely and briefly."
ANSWER = "# 你好!\n\nIt is a **nice** day 👩‍💻 — `print(42)`"
SCRIPT = f"{REASONING}</think>\n\n{ANSWER}"


class Sleeps:
    """Records the backoff the engine asks for, without waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def server():
    async with FakeOpenAI(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def engine_for(server: FakeOpenAI, sleeps: Sleeps | None = None, **options) -> OpenAIEngine:
    options.setdefault("api_key", API_KEY)
    return OpenAIEngine(server.base_url, sleep=sleeps or Sleeps(), **options)


def request(
    text: str = "Hi",
    params: SamplingParams | None = None,
    *,
    prompt_ids: tuple[int, ...] = (),
    system: str = "",
) -> GenerationRequest:
    messages = (ChatMessage("system", system),) if system else ()
    return GenerationRequest(
        prompt_ids,
        params or SamplingParams(),
        messages=(*messages, ChatMessage("user", text)),
    )


def split(text: str, *, starts_in_reasoning: bool) -> tuple[str, str]:
    """What the chat core makes of an engine's text: (reasoning, answer)."""
    splitter = ReasoningSplitter(starts_in_reasoning=starts_in_reasoning)
    events = splitter.push(text) + splitter.flush()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


# -- the request the server gets


async def test_the_request_carries_the_dialogue_and_sampling_settings(server):
    params = SamplingParams(max_new_tokens=321, temperature=0.3, top_p=0.8, stop=("END", "###"))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request("What is 2+2?", params, system="Be brief.")))
    assert result.reason == FinishReason.EOS
    (body,) = server.requests
    assert body["model"] == DEFAULT_MODEL  # model = "": the first id the server lists
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (321, 0.3, 0.8)
    assert body["stop"] == ["END", "###"]
    # The key goes as a Bearer header on every call (GET /models and the completion).
    assert server.authorizations == [f"Bearer {API_KEY}"] * 2


async def test_a_configured_model_is_asked_for_and_the_context_is_the_servers(server):
    server.models = ["other-model", "r1-14b"]
    server.max_model_len = 8192
    async with engine_for(server, model="r1-14b", max_context_tokens=16384) as engine:
        await collect(engine.submit(request()))
        assert engine.model == "r1-14b"
        assert engine.max_sequence_tokens == 8192  # vLLM's max_model_len is smaller
        assert engine.max_batch_size == 64
    assert server.requests[0]["model"] == "r1-14b"
    assert "stop" not in server.requests[0]  # no stop strings: none sent


# -- reasoning in each form the servers use


@pytest.mark.parametrize("form", ["reasoning_content", "reasoning", "inline", "content"])
async def test_every_reasoning_form_gives_the_same_reasoning_and_answer(server, form):
    server.script(answer_steps(SCRIPT, form=form))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.EOS
    # R1's template opens <think>: the chat core starts its splitter inside the reasoning.
    assert split(result.text, starts_in_reasoning=True) == (REASONING, ANSWER)


@pytest.mark.parametrize("form", ["reasoning_content", "reasoning", "inline"])
async def test_a_marked_reasoning_form_does_not_depend_on_the_template(server, form):
    server.script(answer_steps(SCRIPT, form=form))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert split(result.text, starts_in_reasoning=False) == (REASONING, ANSWER)


async def test_separate_reasoning_is_passed_on_inline(server):
    server.script(answer_steps("Hmm, think.</think>Done.", form="reasoning_content"))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert result.text == "<think>Hmm, think.</think>Done."


async def test_content_only_is_split_as_the_template_says(server):
    """The ambiguous form: the template's opening <think> decides, as for the local engine."""
    server.script(
        answer_steps("Just an answer.", form="content"),
        answer_steps("Just an answer.", form="content"),
    )
    async with engine_for(server) as engine:
        first = await collect(engine.submit(request()))
        second = await collect(engine.submit(request()))
    assert first.text == second.text == "Just an answer."
    # A model that does not reason (its template opens no <think>): all answer.
    assert split(first.text, starts_in_reasoning=False) == ("", "Just an answer.")
    # R1 on a server without a reasoning parser, cut before </think>: all reasoning, as when
    # the local engine's output has no </think>.
    assert split(second.text, starts_in_reasoning=True) == ("Just an answer.", "")


async def test_reasoning_only_stays_reasoning(server):
    server.script(answer_steps("Thinking and thinking", form="reasoning", finish="length"))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.LENGTH
    assert split(result.text, starts_in_reasoning=False) == ("Thinking and thinking", "")


def test_reasoning_form_handles_both_fields_in_one_delta_and_late_reasoning():
    form = ReasoningForm()
    assert form.push("step one", "") == "<think>step one"
    assert form.push(" two", "Answer") == " two</think>Answer"  # reasoning first, then content
    assert form.push("more thoughts", " rest") == " rest"  # no way back into the reasoning
    inline = ReasoningForm()
    assert inline.push("", "<think>a</think>b") == "<think>a</think>b"
    assert inline.push("late", "c") == "c"


# -- endings and usage


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        (Finish("stop"), FinishReason.EOS),
        (Finish("length"), FinishReason.LENGTH),
        (Finish("stop", stop_reason="###"), FinishReason.STOP),  # vLLM names the stop string
        (Finish("stop", stop_reason=151643), FinishReason.EOS),  # ... or the EOS token id
    ],
)
async def test_finish_reasons_map_to_ours(server, finish, expected):
    server.script([Delta({"content": "Some text"}), finish, Done()])
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == expected
    assert result.text == "Some text"


async def test_a_content_filter_ending_is_an_error_with_the_text_kept(server):
    server.script([Delta({"content": "Half an"}), Finish("content_filter"), Done()])
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.text == "Half an"
    assert result.finished.error == "the model server's content filter stopped the answer"


async def test_usage_figures_are_kept_when_sent(server):
    server.script(answer_steps(SCRIPT, usage=(1234, 56)))
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request(prompt_ids=(1, 2, 3))))
    assert (result.finished.num_prompt_tokens, result.finished.num_generated_tokens) == (1234, 56)
    assert result.events[0] == Started(num_prompt_tokens=3)
    finished = result.finished
    assert finished.first_token_seconds is not None
    assert 0 <= finished.queued_seconds <= finished.first_token_seconds <= finished.total_seconds


async def test_without_usage_the_chunks_are_counted(server):
    server.script([Delta({"content": p}) for p in ("a", " b", " c")] + [Finish(), Done()])
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request(prompt_ids=(7,) * 10)))
    assert (result.finished.num_prompt_tokens, result.finished.num_generated_tokens) == (10, 3)


async def test_done_without_a_finish_reason_is_an_ordinary_end(server):
    server.script([Delta({"content": "Fine."}), Done()])
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert (result.reason, result.text) == (FinishReason.EOS, "Fine.")


# -- failures mid-answer keep the text so far


async def test_a_connection_cut_mid_answer_ends_it_as_failed_with_its_text(server, sleeps):
    server.script([Delta({"reasoning_content": "Let me"}), Delta({"content": "Partial"}), Cut()])
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.text == "<think>Let me</think>Partial"
    assert result.finished.error == "the connection to the model server was lost"
    assert len(server.requests) == 1 and sleeps.delays == []  # never retried after text


async def test_an_error_event_mid_answer_ends_it_as_failed_with_its_text(server, sleeps):
    server.script([Delta({"content": "Partial"}), ErrorEvent("CUDA out of memory", 500), Done()])
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.text == "Partial"
    assert result.finished.error == "the model server failed while answering"
    assert "CUDA" not in result.finished.error  # the server's own words stay in the log
    assert len(server.requests) == 1


async def test_a_bad_request_is_not_retried(server, sleeps):
    server.script([Refuse(400, "This model's maximum context length is 8192 tokens")])
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.finished.error == "the model server refused the request (HTTP 400)"
    assert result.has_started and result.text == ""
    assert len(server.requests) == 1 and sleeps.delays == []


# -- retries before the first token


async def test_429_then_success_waits_as_retry_after_says(server, sleeps):
    server.script([Refuse(429, "rate limited", retry_after="7")], answer_steps(SCRIPT))
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.EOS
    assert split(result.text, starts_in_reasoning=True) == (REASONING, ANSWER)
    assert sleeps.delays == [7.0]
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]


@pytest.mark.parametrize(
    "failure",
    [
        [Refuse(503, "overloaded")],
        [Refuse(502, "bad gateway")],
        [Cut()],  # closed before any text
        [ErrorEvent("engine dead", 503), Done()],  # an error event before any text
    ],
    ids=["503", "502", "cut", "error-event"],
)
async def test_failures_before_the_first_token_are_retried_with_backoff(server, sleeps, failure):
    server.script(failure, failure, answer_steps(SCRIPT))
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.EOS
    assert split(result.text, starts_in_reasoning=True) == (REASONING, ANSWER)
    assert sleeps.delays == [1.0, 2.0]  # doubling backoff
    assert len(server.requests) == 3


async def test_retries_are_bounded(server, sleeps):
    server.script(*[[Refuse(503, "overloaded")]] * 10)
    async with engine_for(server, sleeps, retry=RetryPolicy(max_attempts=3)) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.finished.error == "the model server failed (HTTP 503)"
    assert sleeps.delays == [1.0, 2.0]
    assert len(server.requests) == 3


async def test_a_retry_after_longer_than_the_limit_is_not_waited_for(server, sleeps):
    server.script([Refuse(429, "come back tomorrow", retry_after="86400")])
    async with engine_for(server, sleeps) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.finished.error == "the model server is busy (HTTP 429)"
    assert sleeps.delays == []


async def test_a_server_that_went_away_is_retried_then_fails(server, sleeps):
    async with engine_for(server, sleeps, retry=RetryPolicy(max_attempts=2)) as engine:
        await server.__aexit__(None, None, None)  # the server stops after start-up
        result = await collect(engine.submit(request()))
        assert not engine.is_up
    assert result.reason == FinishReason.ERROR
    assert result.finished.error.startswith("cannot reach the model server")
    assert sleeps.delays == [1.0]


async def test_is_up_follows_the_server_without_waiting_for_a_message(server, sleeps):
    retry = RetryPolicy(max_attempts=1)
    async with engine_for(server, sleeps, retry=retry, probe_interval=0.01) as engine:
        assert engine.is_up
        server.models_status = 503
        server.script([Refuse(503, "down")])
        failed = await collect(engine.submit(request()))
        assert failed.reason == FinishReason.ERROR
        assert not engine.is_up
        num_lists = server.num_model_lists
        await server.wait_for(lambda: server.num_model_lists >= num_lists + 2)  # asked again
        assert not engine.is_up
        server.models_status = 200
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            while not engine.is_up:
                await asyncio.sleep(0.01)
    assert not engine.is_up  # closed


# -- slow answers, timeouts


async def test_a_slow_first_token_is_waited_for(server):
    first_token = asyncio.Event()
    server.script([Comment(), Hold(first_token), *answer_steps(SCRIPT)])
    async with engine_for(server) as engine:
        reader = Reader(engine.submit(request()))
        await reader.until_type(Started)
        await server.wait_for(lambda: server.num_open == 1)
        assert reader.text == ""
        first_token.set()
        await reader.to_end()
    assert reader.reason == FinishReason.EOS
    assert split(reader.text, starts_in_reasoning=True) == (REASONING, ANSWER)


async def test_an_answer_past_its_deadline_times_out_and_closes_the_stream(server):
    never = asyncio.Event()
    server.script([Delta({"content": "Started"}), Hold(never)])
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request(params=SamplingParams(timeout_seconds=0.2))))
        await server.wait_for(lambda: server.num_disconnects == 1)
    assert result.reason == FinishReason.TIMEOUT
    assert result.text == "Started"


async def test_a_silent_server_fails_after_the_read_timeout(server):
    never = asyncio.Event()
    server.script([Hold(never)])
    async with engine_for(server, read_timeout=0.2) as engine:
        result = await collect(engine.submit(request()))
    assert result.reason == FinishReason.ERROR
    assert result.finished.error == "the model server did not answer in time"


# -- Stop


@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_stop_closes_the_http_stream_and_the_server_sees_it(server, how):
    never = asyncio.Event()
    server.script([Delta({"reasoning_content": "Thinking"}), Hold(never)])
    async with engine_for(server) as engine:
        reader = Reader(engine.submit(request()))
        await reader.until_text()
        if how == "cancel":
            reader.stream.cancel()
        else:
            await reader.stream.aclose()
        await reader.to_end()
        await server.wait_for(lambda: server.num_disconnects == 1)
        assert engine.num_running == 0
    assert reader.reason == FinishReason.CANCELLED
    assert reader.text == "<think>Thinking"
    assert server.num_finished == 0 and server.num_open == 0


async def test_cancel_after_the_end_or_twice_changes_nothing(server):
    async with engine_for(server) as engine:
        stream = engine.submit(request())
        result = await collect(stream)
        stream.cancel()
        stream.cancel()
        await stream.aclose()
    assert result.reason == FinishReason.EOS


async def test_a_stream_cancelled_at_once_still_ends(server):
    async with engine_for(server) as engine:
        stream = engine.submit(request())
        stream.cancel()  # before its task ever ran
        result = await collect(stream)
    assert result.reason == FinishReason.CANCELLED


# -- concurrency and the queue


def hold_all(server: FakeOpenAI, gate: asyncio.Event) -> None:
    server.answer = lambda body: [Hold(gate), *answer_steps(SCRIPT)]


async def test_sixteen_chats_open_sixteen_streams_at_once(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=64) as engine:
        readers = [Reader(engine.submit(request(f"chat {i}"))) for i in range(16)]
        await server.wait_for(lambda: server.num_open == 16)
        assert engine.num_running == 16 and engine.num_waiting == 0
        gate.set()
        results = await asyncio.gather(*(r.to_end() for r in readers))
    assert server.max_open == 16
    assert all(r.reason == FinishReason.EOS and not r.positions for r in results)


async def test_with_max_concurrency_4_the_rest_wait_in_line_with_positions(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=4) as engine:
        readers = [Reader(engine.submit(request(f"chat {i}"))) for i in range(16)]
        await server.wait_for(lambda: server.num_open == 4)
        for i, reader in enumerate(readers[4:], start=1):
            assert await reader.until_type(Queued) == Queued(i)
        assert engine.num_running == 4 and engine.num_waiting == 12
        gate.set()
        results = await asyncio.gather(*(r.to_end() for r in readers))
    assert server.max_open == 4  # never more streams than allowed
    assert len(server.requests) == 16
    assert all(r.reason == FinishReason.EOS for r in results)
    assert all(not r.positions for r in results[:4])
    for i, reader in enumerate(results[4:], start=1):
        # The position only ever goes down, by the line moving, to the front.
        assert reader.positions[0] == i and reader.positions[-1] == 1
        assert reader.positions == sorted(set(reader.positions), reverse=True)


async def test_cancelling_a_waiting_request_moves_the_others_up(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=1) as engine:
        running = Reader(engine.submit(request("running")))
        second = Reader(engine.submit(request("second")))
        third = Reader(engine.submit(request("third")))
        await third.until(lambda event: event == Queued(2))
        second.stream.cancel()
        await second.to_end()
        await third.until(lambda event: event == Queued(1))
        gate.set()
        await running.to_end()
        await third.to_end()
    assert second.reason == FinishReason.CANCELLED and not second.has_started
    assert third.reason == FinishReason.EOS
    assert len(server.requests) == 2  # the cancelled one never reached the server


async def test_a_full_queue_refuses_with_engine_busy(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=1, max_queue=2) as engine:
        readers = [Reader(engine.submit(request(str(i)))) for i in range(3)]
        with pytest.raises(EngineBusy):
            engine.submit(request("one too many"))
        gate.set()
        results = await asyncio.gather(*(r.to_end() for r in readers))
    assert [r.reason for r in results] == [FinishReason.EOS] * 3


async def test_a_waiting_request_past_its_deadline_times_out_without_starting(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=1) as engine:
        running = Reader(engine.submit(request("running")))
        late = await collect(engine.submit(request(params=SamplingParams(timeout_seconds=0.1))))
        gate.set()
        await running.to_end()
    assert late.reason == FinishReason.TIMEOUT and not late.has_started
    assert late.positions == [1]
    assert len(server.requests) == 1


# -- shutdown


async def test_leaving_the_engine_ends_running_and_waiting_requests_with_shutdown(server):
    gate = asyncio.Event()
    hold_all(server, gate)
    async with engine_for(server, max_concurrency=1) as engine:
        running = Reader(engine.submit(request("running")))
        waiting = Reader(engine.submit(request("waiting")))
        await server.wait_for(lambda: server.num_open == 1)
    await running.to_end()
    await waiting.to_end()
    assert running.reason == waiting.reason == FinishReason.SHUTDOWN
    await server.wait_for(lambda: server.num_disconnects == 1)
    with pytest.raises(EngineError, match="shutting down"):
        engine.submit(request())


async def test_requests_need_a_running_engine_and_messages(server):
    engine = engine_for(server)
    with pytest.raises(EngineError, match="not running"):
        engine.submit(request())
    async with engine:
        with pytest.raises(EngineError, match="no messages"):
            engine.submit(GenerationRequest((1, 2, 3)))


# -- start-up


async def test_a_wrong_api_key_at_start_up_stops_with_one_line_naming_openai(server, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-wrong-key-0000111122223333"
    with pytest.raises(EngineError) as failed:
        async with engine_for(server, api_key=wrong_key):
            pass
    message = str(failed.value)
    assert message.startswith(f"[openai] base_url {server.base_url}:")
    assert "refused the API key (HTTP 401)" in message and "\n" not in message
    assert wrong_key not in message and wrong_key[-4:] not in message
    assert wrong_key not in caplog.text
    assert server.requests == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda s: setattr(s, "models_status", 403), r"refused the API key \(HTTP 403\)"),
        (lambda s: setattr(s, "models_status", 404), r"answered 404\); the root usually ends"),
        (lambda s: setattr(s, "models_status", 500), r"GET /models answered HTTP 500"),
        (lambda s: setattr(s, "models", []), r"the server lists no models"),
    ],
    ids=["403", "404", "500", "no-models"],
)
async def test_a_server_that_cannot_serve_stops_start_up(server, setup, expected):
    setup(server)
    with pytest.raises(EngineError, match=expected) as failed:
        async with engine_for(server):
            pass
    assert str(failed.value).startswith("[openai]")


async def test_a_model_the_server_does_not_serve_stops_start_up(server):
    with pytest.raises(EngineError, match=r"\[openai\] model 'r1-typo' is not served at") as e:
        async with engine_for(server, model="r1-typo"):
            pass
    assert DEFAULT_MODEL in str(e.value)  # what it does serve


async def test_an_unreachable_server_stops_start_up():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EngineError, match=r"^\[openai\] base_url .*: cannot connect \(Connect"):
        async with OpenAIEngine(url, api_key=API_KEY):
            pass


async def test_a_password_in_the_base_url_is_not_shown(server):
    server.models_status = 500
    url = server.base_url.replace("http://", "http://alice:pw-in-url-77@")
    with pytest.raises(EngineError) as failed:
        async with OpenAIEngine(url):
            pass
    assert "pw-in-url-77" not in str(failed.value)


# -- the API key


async def test_the_api_key_never_appears_in_logs_or_errors(server, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    async with engine_for(server, sleeps) as engine:
        ok = await collect(engine.submit(request()))
        server.api_key = "sk-rotated-on-the-server"  # our key is refused from now on
        refused = await collect(engine.submit(request()))
        server.script(*[[Refuse(500, f"echoing your key {API_KEY}")]] * 5)
        server.api_key = API_KEY
        echoed = await collect(engine.submit(request()))
    assert ok.reason == FinishReason.EOS
    assert refused.reason == FinishReason.ERROR
    assert refused.finished.error == "the model server refused the API key (HTTP 401)"
    assert echoed.reason == FinishReason.ERROR
    assert API_KEY not in caplog.text
    assert all(API_KEY not in str(r.finished.error) for r in (refused, echoed))
    assert API_KEY not in repr(engine) and API_KEY not in repr(vars(engine))
    assert server.authorizations[-1] == f"Bearer {API_KEY}"


async def test_no_key_sends_no_authorization_header():
    async with FakeOpenAI() as server, OpenAIEngine(server.base_url, api_key="") as engine:
        await collect(engine.submit(request()))
    assert server.authorizations == [None, None]


# -- usage: events in the engine's usual shape


async def test_the_event_sequence_is_started_then_text_then_finished(server):
    server.script(
        [Delta({"reasoning_content": "a"}), Delta({"content": "b"}), Finish(), Usage(5, 2)]
    )
    async with engine_for(server) as engine:
        result = await collect(engine.submit(request()))
    assert [type(e) for e in result.events] == [
        Started,
        TextDelta,
        TextDelta,
        type(result.finished),
    ]
    assert result.reason == FinishReason.EOS  # no [DONE]: the end of the body ends it too
    assert result.finished.num_generated_tokens == 2


# -- building it from the settings


def test_build_loads_the_tokenizer_and_no_weights(fixture_path):
    settings = Settings(
        model=ModelSettings(path=str(fixture_path), local_files_only=True),
        openai=OpenAISettings(base_url="http://127.0.0.1:9/v1", max_concurrency=7),
    )
    tokenizer, engine = build_openai_engine(settings)
    assert tokenizer is not None and tokenizer.chat_template
    assert isinstance(engine, OpenAIEngine) and engine.max_batch_size == 7


def test_without_a_tokenizer_the_build_says_so_once_and_goes_on(tmp_path, caplog):
    settings = Settings(model=ModelSettings(path=str(tmp_path / "nothing"), local_files_only=True))
    with caplog.at_level(logging.WARNING):
        tokenizer, engine = build_openai_engine(settings)
    assert tokenizer is None and isinstance(engine, OpenAIEngine)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "estimate of 3 characters a token" in warnings[0].getMessage()


@pytest.mark.slow  # a fresh interpreter imports transformers
def test_the_remote_backend_does_not_touch_torch_cuda(fixture_path):
    code = (
        "import sys\n"
        "from bot.config import Settings, ModelSettings\n"
        "from bot.engine.remote_factory import build_openai_engine\n"
        "assert 'torch' not in sys.modules, 'importing the remote engine imported torch'\n"
        f"settings = Settings(model=ModelSettings(path={str(fixture_path)!r}, "
        "local_files_only=True))\n"
        "tokenizer, engine = build_openai_engine(settings)\n"
        "assert tokenizer is not None\n"
        "torch = sys.modules.get('torch')\n"
        "assert torch is None or not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=bot_env(CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
