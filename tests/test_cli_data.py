"""`python -m bot history --user ID --delete` and `python -m bot backup PATH` as subprocesses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import subprocess
from pathlib import Path

import pexpect
import pytest

from bot.store.sqlite import SqliteStore
from bot.types import ChatKey
from tests.support.configs import REPO, bot_command, bot_env, write_config

ALICE = ChatKey("telegram", "-100", "alice")
ALICE_DISCORD = ChatKey("discord", "7", "alice")
BOB = ChatKey("telegram", "-100", "bob")


def run_bot(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(
        bot_command(*args),
        cwd=REPO,
        env=bot_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()
    return line


async def _fill(db: Path) -> None:
    async with SqliteStore.open(db) as store:
        for key in (ALICE, ALICE_DISCORD, BOB):
            await store.add_user_message(key, f"hello from {key}")
            await store.add_assistant_message(key, answer=f"hello {key.user_id}")
        await store.reset(ALICE)
        await store.add_user_message(ALICE, "a second dialogue")


@pytest.fixture
async def config(tmp_path: Path) -> Path:
    db = tmp_path / "bot.db"
    await _fill(db)
    return write_config(tmp_path / "config.toml", {"storage": {"path": str(db)}})


def users(config: Path) -> list[tuple[str, str]]:
    result = run_bot("history", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return [(r["platform"], r["user_id"]) for r in map(json.loads, result.stdout.splitlines())]


def test_delete_with_yes_removes_one_users_data_and_says_what(config: Path) -> None:
    result = run_bot("history", "--config", str(config), "--user", "alice", "--delete", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "deleted 5 messages in 3 dialogues of user alice\n"
    assert result.stderr == ""
    assert users(config) == [("telegram", "bob")] * 2


def test_delete_on_one_platform(config: Path) -> None:
    args = ("--user", "alice", "--platform", "discord", "--delete", "--yes")
    result = run_bot("history", "--config", str(config), *args)
    assert result.stdout == "deleted 2 messages in 1 dialogue of user alice on discord\n"
    assert ("discord", "alice") not in users(config)
    assert users(config).count(("telegram", "alice")) == 3
    again = run_bot("history", "--config", str(config), *args)
    assert (again.returncode, again.stdout) == (0, "nothing stored for user alice on discord\n")


def test_delete_without_a_terminal_or_yes_refuses_and_keeps_everything(config: Path) -> None:
    before = users(config)
    result = run_bot("history", "--config", str(config), "--user", "alice", "--delete")
    line = one_error_line(result)
    assert "--yes" in line and "alice" in line
    assert users(config) == before


def test_delete_needs_a_user(config: Path) -> None:
    before = users(config)
    line = one_error_line(run_bot("history", "--config", str(config), "--delete", "--yes"))
    assert "--user" in line
    assert users(config) == before


@pytest.mark.parametrize(("answer", "is_deleted"), [("y", True), ("n", False), ("", False)])
def test_delete_on_a_terminal_asks_first(config: Path, answer: str, is_deleted: bool) -> None:
    program, *args = bot_command("history", "--config", str(config), "--user", "bob", "--delete")
    child = pexpect.spawn(program, args, cwd=str(REPO), env=bot_env(), encoding="utf-8", timeout=60)
    try:
        child.expect(r"Delete 2 messages in 1 dialogue of user bob\? This cannot be undone\. ")
        child.sendline(answer)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert ("deleted 2 messages" in child.before) is is_deleted
    assert (("telegram", "bob") in users(config)) is not is_deleted
    assert child.exitstatus == (0 if is_deleted else 1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _contents(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT content FROM messages ORDER BY id")]
    finally:
        conn.close()


def test_backup_writes_an_owner_only_copy_and_never_overwrites_without_force(
    tmp_path: Path, config: Path
) -> None:
    target = tmp_path / "backups" / "bot-copy.db"
    result = run_bot("backup", "--config", str(config), str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"backed up {tmp_path / 'bot.db'} to {target} (7 messages, ")
    assert _mode(target) == 0o600
    assert _contents(target) == _contents(tmp_path / "bot.db")

    target.write_bytes(b"precious")
    line = one_error_line(run_bot("backup", "--config", str(config), str(target)))
    assert str(target) in line and "--force" in line
    assert target.read_bytes() == b"precious"

    forced = run_bot("backup", "--config", str(config), str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(_contents(target)) == 7


def test_backup_without_a_database_says_so(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    config = write_config(tmp_path / "config.toml", {"storage": {"path": str(db)}})
    line = one_error_line(run_bot("backup", "--config", str(config), str(tmp_path / "b.db")))
    assert str(db) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


async def test_backup_while_the_bot_writes(tmp_path: Path, config: Path) -> None:
    """The bot's store stays open and keeps writing while another process backs it up."""
    target = tmp_path / "copy.db"
    async with SqliteStore.open(tmp_path / "bot.db") as bot:
        reply_id = await bot.begin_reply(BOB)
        await bot.checkpoint_reply(reply_id, "half an answer", "")
        before = len(await bot.query_messages())
        process = await asyncio.create_subprocess_exec(
            *bot_command("backup", "--config", str(config), str(target)),
            cwd=REPO,
            env=bot_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        n = 0
        while process.returncode is None:
            await bot.add_user_message(ALICE, f"written during the backup {n}")
            await bot.checkpoint_reply(reply_id, f"half an answer, {n}", "")
            n += 1
            await asyncio.sleep(0.01)
        stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr
        # The bot's answer in progress was not cut by the other process.
        [reply] = [m for m in await bot.query_messages() if m.id == reply_id]
        assert reply.status == "streaming"
    copied, final = _contents(target), _contents(tmp_path / "bot.db")
    assert len(copied) >= before
    # The copy is the database as of one moment: what was there, then a prefix of the rest.
    assert copied[: before - 1] == final[: before - 1]
    assert copied[before - 1].startswith("half an answer")  # the reply, as last checkpointed
    assert copied[before:] == final[before : len(copied)]
    assert f"({len(copied)} messages" in stdout.decode()
