"""`python -m bot console` as a real subprocess on a terminal (pexpect), with tiny model folders.

Each test starts the bot (torch, transformers, a model load): a few seconds per start.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from bot.store.sqlite import MessageRecord, SqliteStore
from bot.types import ChatKey
from tests.support.configs import REPO, bot_command, bot_env, tiny_model_config
from tests.support.looping import build_looping_model
from tests.support.models import build_scripted_model, save_model_folder

pytestmark = pytest.mark.slow

REASONING = "The user greets me, so I greet them back in two languages."
ANSWER = "Hello! 你好 👋 **Nice** to meet you 🙂"
LOOP_REASONING = "Thinking briefly."
LOOP_ANSWER = "On" + " and on" * 10_000
PROMPT = "you> "
CONSOLE = ChatKey("console", "local", "local")
WAIT = 60  # seconds before pexpect gives up (a start loads torch and a model)


@pytest.fixture(scope="module")
def chatty_folder(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model that always writes REASONING, </think>, ANSWER."""
    model = build_scripted_model(tokenizer, f"{REASONING}</think>\n\n{ANSWER}")
    return save_model_folder(model, tokenizer, tmp_path_factory.mktemp("chatty"))


@pytest.fixture(scope="module")
def endless_folder(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model whose answer never ends."""
    model = build_looping_model(tokenizer, f"{LOOP_REASONING}</think>\n\nOn", " and on")
    return save_model_folder(model, tokenizer, tmp_path_factory.mktemp("endless"))


def start_console(config: Path, *, colour: bool = False) -> tuple[pexpect.spawn, str]:
    """The running console at its first prompt, and what it printed before the prompt."""
    program, *args = bot_command("console", "--config", str(config))
    env = bot_env()
    if colour:
        del env["NO_COLOR"]
    child = pexpect.spawn(
        program,
        args,
        cwd=str(REPO),
        env=env,
        encoding="utf-8",
        timeout=WAIT,
        dimensions=(40, 200),
    )
    child.expect_exact("Ctrl-D quits.\r\n")
    greeting = child.before.replace("\r\n", "\n")
    child.expect_exact("you>" if colour else PROMPT)  # in bold on a colour terminal
    return child, greeting


def say(child: pexpect.spawn, text: str) -> str:
    """Send a line; return what the bot printed up to its next prompt (without the echo)."""
    child.sendline(text)
    child.expect_exact(text + "\r\n")  # the terminal's echo of the typed line
    child.expect_exact(PROMPT)
    return child.before.replace("\r\n", "\n")


def quit_with_ctrl_d(child: pexpect.spawn) -> None:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def stored(db: Path) -> list[MessageRecord]:
    async def read() -> list[MessageRecord]:
        async with SqliteStore.open(db) as store:
            return await store.query_messages()

    return asyncio.run(read())


def test_one_turn_shows_reasoning_then_the_exact_answer_and_ctrl_d_quits(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    child, greeting = start_console(tiny_model_config(tmp_path / "config.toml", chatty_folder, db))
    assert "resuming" not in greeting
    shown = say(child, "Hi there!")
    quit_with_ctrl_d(child)

    reasoning, _, answer = shown.partition("(thought for ")
    assert reasoning.strip() == REASONING
    assert answer.split("\n", 1)[1].strip() == ANSWER  # after "N s)": only the answer
    assert "Hi there!" not in shown and "<｜" not in shown and "think>" not in shown
    question, reply = stored(db)
    assert (question.role, question.content) == ("user", "Hi there!")
    assert (reply.role, reply.content, reply.reasoning, reply.status) == (
        "assistant",
        ANSWER,
        REASONING,
        "complete",
    )


def test_a_restart_shows_and_resumes_the_dialogue(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    config = tiny_model_config(tmp_path / "config.toml", chatty_folder, db)
    child, _ = start_console(config)
    say(child, "First question")
    quit_with_ctrl_d(child)

    child, greeting = start_console(config)
    assert "(resuming a dialogue of 2 messages)" in greeting
    assert f"you> First question\nbot> {ANSWER}\n" in greeting
    assert ANSWER in say(child, "Second question")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    messages = stored(db)
    assert [m.content for m in messages] == ["First question", ANSWER, "Second question", ANSWER]
    assert len({m.conversation_id for m in messages}) == 1  # one dialogue, resumed
    first, second = (m for m in messages if m.role == "assistant")
    # The second prompt carried the first turn.
    assert second.num_prompt_tokens > first.num_prompt_tokens + 5


def telling_a_long_story(
    folder: Path, tmp_path: Path, **sections: Any
) -> tuple[pexpect.spawn, Path, Path]:
    """The console with the endless model, its answer streaming: (child, database, config)."""
    db = tmp_path / "bot.db"
    config = tiny_model_config(
        tmp_path / "config.toml",
        folder,
        db,
        generation={"max_new_tokens": 100_000},
        **sections,
    )
    child, _ = start_console(config)
    child.sendline("Tell me a long story.")
    child.expect_exact(" and on and on")  # the answer is streaming
    return child, db, config


def test_ctrl_c_stops_the_answer_without_quitting(endless_folder, tmp_path):
    child, db, _ = telling_a_long_story(endless_folder, tmp_path)
    child.sendintr()
    child.expect_exact("(Stopped.)")
    child.expect_exact(PROMPT)
    assert "Commands:" in say(child, "/help")  # still here, and listening
    child.sendintr()  # at the prompt, Ctrl-C only says how to quit
    child.expect_exact("(Ctrl-D or /exit quits)")
    child.expect_exact(PROMPT)
    quit_with_ctrl_d(child)

    question, reply = stored(db)
    assert question.content == "Tell me a long story."
    assert (reply.status, reply.reasoning) == ("stopped", LOOP_REASONING)
    assert reply.content.startswith("On and on and on") and LOOP_ANSWER.startswith(reply.content)


def test_commands(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    config = tiny_model_config(
        tmp_path / "config.toml", chatty_folder, db, chat={"system_prompt": "Be kind."}
    )
    child, _ = start_console(config)
    help_text = say(child, "/help")
    for command in ("/reset", "/system", "/stats", "/help", "/exit", "Ctrl-C"):
        assert command in help_text
    assert (
        say(child, "/frobnicate").strip() == "I don't know that command. /help lists what I can do."
    )
    assert say(child, "/system").strip() == "System prompt (the default):\n\nBe kind."
    assert say(child, "/system Speak like a pirate.").strip() == (
        "System prompt set for this chat. /reset to start afresh with it."
    )
    assert (
        say(child, "/system").strip()
        == "System prompt (set for this chat):\n\nSpeak like a pirate."
    )
    assert ANSWER in say(child, "Question one")
    assert say(child, "/reset").strip().startswith("🧹 New conversation")
    assert ANSWER in say(child, "Question two")
    assert say(child, "/system clear").strip() == "System prompt restored to the default."
    assert ANSWER in say(child, "Question six")
    stats = say(child, "/stats")
    assert "Replies: 3 (complete 3)" in stats
    assert "Now: 0 generating, 0 waiting" in stats
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    messages = stored(db)
    assert [m.content for m in messages if m.role == "user"] == [
        "Question one",
        "Question two",
        "Question six",
    ]
    conversations = [m.conversation_id for m in messages]
    assert conversations[0] == conversations[1] != conversations[2]  # /reset kept the old one
    one, two, six = (m.num_prompt_tokens for m in messages if m.role == "assistant")
    assert one == two  # a fresh dialogue: the same system prompt and no history
    assert six > two  # after /system clear: "Be kind." is shorter, but the dialogue goes on

    async def chat_system_prompt() -> Any:
        async with SqliteStore.open(db) as store:
            return await store.get_system_prompt(CONSOLE.platform, CONSOLE.chat_id)

    assert asyncio.run(chat_system_prompt()) is None


def test_line_editing_and_the_sessions_earlier_lines(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    child, _ = start_console(tiny_model_config(tmp_path / "config.toml", chatty_folder, db))
    left, up = "\x1b[D", "\x1b[A"
    # A typo mended in place: the cursor goes back four characters and a letter is put in.
    child.send(f"Questio one{left * 4}n\r")
    child.expect_exact(ANSWER)
    child.expect_exact(PROMPT)
    child.send(f"{up}\r")  # the up arrow brings the last line back
    child.expect_exact(ANSWER)
    child.expect_exact(PROMPT)
    quit_with_ctrl_d(child)
    asked = [m.content for m in stored(db) if m.role == "user"]
    assert asked == ["Question one", "Question one"]


def test_ctrl_d_during_an_answer_stops_it_and_quits(endless_folder, tmp_path):
    child, db, _ = telling_a_long_story(endless_folder, tmp_path)
    child.sendeof()
    child.expect_exact("(Stopped.)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    question, reply = stored(db)
    assert question.content == "Tell me a long story."
    assert reply.status == "stopped"
    assert reply.content.startswith("On and on and on")


def test_a_colour_terminal_gets_the_answer_as_rendered_markdown(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    config = tiny_model_config(tmp_path / "config.toml", chatty_folder, db)
    child, _ = start_console(config, colour=True)
    child.sendline("Hello")
    child.expect_exact("\x1b[1m" + "Nice")  # **Nice** in bold, without the asterisks
    child.expect_exact("to meet you")
    child.expect_exact("you>")
    shown = child.before
    quit_with_ctrl_d(child)
    assert "**" not in shown
    [_, reply] = stored(db)
    assert reply.content == ANSWER  # stored as the model wrote it


def history(config: Path) -> list[dict[str, Any]]:
    """What `python -m bot history` prints, one dict a message."""
    result = subprocess.run(
        bot_command("history", "--config", str(config)),
        cwd=REPO,
        env=bot_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_kill_9_mid_answer_keeps_the_text_so_far_as_interrupted(endless_folder, tmp_path):
    child, db, config = telling_a_long_story(
        endless_folder, tmp_path, storage={"checkpoint_seconds": 0.2}
    )
    deadline = time.monotonic() + WAIT
    while not (saved := stored(db)[-1]).content.startswith("On and on"):
        assert time.monotonic() < deadline, "no checkpoint of the answer was written"
        time.sleep(0.1)
    assert saved.status == "streaming"
    child.kill(signal.SIGKILL)
    child.close()
    assert child.signalstatus == signal.SIGKILL

    child, greeting = start_console(config)  # the restart finds the cut answer
    quit_with_ctrl_d(child)

    question, reply = history(config)
    assert question["content"] == "Tell me a long story."
    assert (reply["role"], reply["status"]) == ("assistant", "interrupted")
    assert reply["content"].startswith(saved.content) and LOOP_ANSWER.startswith(reply["content"])
    assert reply["reasoning"] == LOOP_REASONING
    assert f"bot> {reply['content']}" in greeting  # the dialogue goes on from it


def test_reload_applies_a_new_default_system_prompt_and_names_a_restart(chatty_folder, tmp_path):
    db = tmp_path / "bot.db"
    config = tiny_model_config(tmp_path / "config.toml", chatty_folder, db)
    child, _ = start_console(config)
    assert "System prompt (the default):\n\n(empty)" in say(child, "/system")
    tiny_model_config(
        config, chatty_folder, db, chat={"system_prompt": "Be brief."}, model={"dtype": "bfloat16"}
    )
    reloaded = say(child, "/reload")
    assert "Config reloaded: chat.system_prompt\nneeds a restart: model.dtype" in reloaded
    assert "System prompt (the default):\n\nBe brief." in say(child, "/system")
    config.write_text("[chat]\nmax_message_chars = 0\n", encoding="utf-8")
    refused = say(child, "/reload")
    assert "Config not reloaded (the old settings stay): " in refused
    assert "chat.max_message_chars must be greater than 0" in refused
    assert "System prompt (the default):\n\nBe brief." in say(child, "/system")
    quit_with_ctrl_d(child)
