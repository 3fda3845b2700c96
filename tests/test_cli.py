"""`python -m bot` commands as subprocesses: history, run, console start-up failures, check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.store.sqlite import SqliteStore
from bot.types import ChatKey, ReplyStatus
from tests.support.configs import REPO, bot_command, bot_env, write_config

ALICE = ChatKey("telegram", "-100", "alice")
BOB = ChatKey("telegram", "-100", "bob")
CAROL = ChatKey("discord", "555", "carol")
HISTORY_KEYS = {"role", "content", "reasoning", "status", "conversation_id", "created_at"}


def run_bot(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bot_command(*args),
        cwd=cwd,
        env=bot_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failure explained in one line on stderr: no traceback, no log noise."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
async def history_db(tmp_path: Path) -> Path:
    """Three users on two platforms; Alice reset once, so she has two dialogues."""
    db = tmp_path / "bot.db"
    async with SqliteStore.open(db) as store:
        await store.add_user_message(ALICE, "Alice 1: 你好")
        await store.add_assistant_message(
            ALICE,
            answer="Hi Alice 👋",
            reasoning="She greets me.",
            num_prompt_tokens=9,
            num_generated_tokens=12,
            first_token_seconds=0.5,
            total_seconds=1.5,
        )
        await store.reset(ALICE)
        await store.add_user_message(ALICE, "Alice 2")
        await store.add_assistant_message(ALICE, answer="Cut", status=ReplyStatus.STOPPED)
        await store.add_user_message(BOB, "Bob 1")
        await store.add_user_message(CAROL, "Carol 1")
        await store.add_assistant_message(CAROL, answer="", status=ReplyStatus.INTERRUPTED)
    return db


def history(tmp_path: Path, db: Path, *filters: str) -> list[dict]:
    config = write_config(tmp_path / "config.toml", {"storage": {"path": str(db)}})
    result = run_bot("history", "--config", str(config), *filters)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_history_prints_every_message_as_json_lines(tmp_path, history_db):
    records = history(tmp_path, history_db)
    assert all(set(r) >= HISTORY_KEYS for r in records)
    assert [(r["user_id"], r["role"], r["content"], r["status"]) for r in records] == [
        ("alice", "user", "Alice 1: 你好", "complete"),
        ("alice", "assistant", "Hi Alice 👋", "complete"),
        ("alice", "user", "Alice 2", "complete"),
        ("alice", "assistant", "Cut", "stopped"),
        ("bob", "user", "Bob 1", "complete"),
        ("carol", "user", "Carol 1", "complete"),
        ("carol", "assistant", "", "interrupted"),
    ]
    first_reply = records[1]
    assert first_reply["reasoning"] == "She greets me."
    assert (first_reply["num_prompt_tokens"], first_reply["num_generated_tokens"]) == (9, 12)
    assert (first_reply["first_token_seconds"], first_reply["total_seconds"]) == (0.5, 1.5)
    alice_dialogues = [r["conversation_id"] for r in records[:4]]
    assert alice_dialogues[0] == alice_dialogues[1] != alice_dialogues[2] == alice_dialogues[3]
    assert all(r["created_at"].endswith("+00:00") for r in records)


def test_history_filters(tmp_path, history_db):
    def users(*filters: str) -> list[str]:
        return [r["user_id"] for r in history(tmp_path, history_db, *filters)]

    assert users("--platform", "discord") == ["carol", "carol"]
    # Telegram group ids are negative: "-100" is a value, not an option.
    assert users("--chat", "-100") == ["alice"] * 4 + ["bob"]
    assert users("--platform", "telegram", "--user", "bob") == ["bob"]
    assert users("--chat", "-100", "--user", "carol") == []


def test_history_without_a_database_says_so(tmp_path):
    db = tmp_path / "missing.db"
    config = write_config(tmp_path / "config.toml", {"storage": {"path": str(db)}})
    line = assert_one_sentence_error(run_bot("history", "--config", str(config)))
    assert str(db) in line
    assert not db.exists()  # looking did not create it


def test_run_without_a_frontend_points_to_the_console(tmp_path):
    db = tmp_path / "bot.db"
    config = write_config(tmp_path / "config.toml", {"storage": {"path": str(db)}})
    result = run_bot("run", "--config", str(config))
    line = assert_one_sentence_error(result)
    assert "python -m bot console" in line
    assert result.stdout == ""
    assert not db.exists()  # it stopped before starting anything


def test_console_with_the_example_config_and_no_weights_fails_in_one_sentence(tmp_path):
    """On a machine without the weights (and here without a GPU): one sentence, no traceback."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(
        try_to_load_from_cache("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "config.json"), str
    ):
        pytest.skip("the real weights are in the Hugging Face cache here: it would load them")
    result = run_bot("console", "--config", str(REPO / "config.example.toml"), cwd=tmp_path)
    line = assert_one_sentence_error(result)
    assert line.startswith("error: ")
    assert "DeepSeek-R1-Distill-Qwen-14B" in line or "GPU" in line


@pytest.mark.parametrize("folder", ["missing", "tokenizer only"])
def test_console_with_a_bad_model_folder_fails_in_one_sentence(tmp_path, tokenizer, folder):
    model = tmp_path / "model"
    if folder == "tokenizer only":
        tokenizer.save_pretrained(model)
    config = write_config(
        tmp_path / "config.toml",
        {
            "model": {"path": str(model), "quantization": "none", "device": "cpu"},
            "storage": {"path": str(tmp_path / "bot.db")},
        },
    )
    line = assert_one_sentence_error(run_bot("console", "--config", str(config)))
    assert f"[model] path {str(model)!r}" in line
    assert ("no such folder" if folder == "missing" else "not a model folder") in line
    assert not list(tmp_path.glob("bot.db*")), "a failed start leaves no empty database"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("generation", "temperature", "hot", "generation.temperature must be a number"),
        ("generation", "top_p", 1.5, "generation.top_p must be in (0, 1]"),
        ("model", "quantization", "nf3", "model.quantization must be one of"),
        ("model", "quantisation", "nf4", "unknown key [model] 'quantisation'"),
        ("chat", "reasoning", "loud", "chat.reasoning must be one of"),
    ],
)
def test_a_bad_config_value_names_the_key_and_the_file(tmp_path, section, key, value, expected):
    config = write_config(tmp_path / "config.toml", {section: {key: value}})
    for command in ("console", "check"):
        line = assert_one_sentence_error(run_bot(command, "--config", str(config)))
        assert str(config) in line
        assert expected in line


def test_check_never_prints_a_token(tmp_path):
    secrets = [
        "123456:telegram-secret-token",
        "webhook-secret-value",
        "discord-secret-token",
        "proxy-password-value",
    ]
    config = write_config(
        tmp_path / "config.toml",
        {
            "storage": {"path": str(tmp_path / "bot.db")},
            "telegram": {
                "enabled": True,
                "token": secrets[0],
                "mode": "webhook",
                "webhook_url": "https://bot.example/hook",
                "webhook_secret": secrets[1],
                "proxy": f"http://alice:{secrets[3]}@proxy.example:3128",
            },
        },
    )
    result = run_bot("check", "--config", str(config), DISCORD_BOT_TOKEN=secrets[2])
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in output
        assert secret[:8] not in output
    assert "[telegram] enabled=True, token='<set>'" in output
    assert "[discord] enabled=True, token='<set>'" in output  # enabled by the env token
    assert "webhook_secret='<set>'" in output
    assert "proxy='http://alice:<redacted>@proxy.example:3128'" in output


def test_a_secret_in_a_bad_value_is_not_echoed(tmp_path):
    config = write_config(tmp_path / "config.toml", {"telegram": {"token": 123456789}})
    line = assert_one_sentence_error(run_bot("check", "--config", str(config)))
    assert "telegram.token must be a string" in line
    assert "123456789" not in line


def test_version_names_the_installed_package(tmp_path):
    result = run_bot("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("python -m bot ")
    assert result.stdout.split()[-1][0].isdigit(), result.stdout


def test_check_prints_the_openai_backend_and_metrics_port_but_never_the_api_key(tmp_path):
    key = "sk-remote-secret-key-value"
    config = write_config(
        tmp_path / "config.toml",
        {
            "storage": {"path": str(tmp_path / "bot.db")},
            "engine": {"backend": "openai"},
            "openai": {"base_url": "http://vllm.example:8000/v1", "model": "r1-14b"},
            "metrics": {"port": 9464, "listen": "0.0.0.0"},
        },
    )
    result = run_bot("check", "--config", str(config), OPENAI_API_KEY=key)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert key not in output and key[:8] not in output
    assert "backend: openai at http://vllm.example:8000/v1, model r1-14b" in output
    assert "api_key='<set>'" in output
    assert "metrics: http://0.0.0.0:9464/metrics and /healthz" in output


def test_check_says_the_local_backend_and_that_metrics_are_off(tmp_path):
    config = write_config(tmp_path / "config.toml", {"storage": {"path": str(tmp_path / "b.db")}})
    result = run_bot("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "backend: local, model " in result.stdout
    assert "metrics: off ([metrics] port = 0)" in result.stdout
    assert "[openai]" not in result.stdout  # not used: not shown
