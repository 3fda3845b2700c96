"""The data commands: `history --user ID --delete` and `backup PATH` (safe while the bot runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bot.config import Settings

_YES = ("y", "yes")


async def delete_history(settings: Settings, args: argparse.Namespace) -> int:
    """Delete one user's dialogues after a confirmation (or --yes); print what was deleted."""
    from bot.store.sqlite import SqliteStore

    if args.user is None:
        print("error: --delete needs --user ID: whose data to delete", file=sys.stderr)
        return 2
    if not Path(settings.storage.path).exists():
        print(f"error: no database at {settings.storage.path}", file=sys.stderr)
        return 1
    whose = _whose(args)
    async with SqliteStore.open(settings.storage.path) as store:
        found = await store.count_user_data(args.user, platform=args.platform, chat_id=args.chat)
        if found.is_empty:
            print(f"nothing stored for {whose}")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                print(
                    f"error: not deleting {whose}'s data without confirmation: "
                    "run it in a terminal, or add --yes",
                    file=sys.stderr,
                )
                return 1
            question = (
                f"Delete {_counts(found.num_messages, found.num_conversations)} of {whose}? "
                "This cannot be undone. [y/N] "
            )
            if not await _confirm(question):
                print("nothing deleted")
                return 1
        deleted = await store.delete_user_data(args.user, platform=args.platform, chat_id=args.chat)
    print(f"deleted {_counts(deleted.num_messages, deleted.num_conversations)} of {whose}")
    return 0


async def backup(settings: Settings, args: argparse.Namespace) -> int:
    """Copy the database to PATH, also while the bot runs; an existing file only with --force."""
    from bot.store.maintenance import backup_database

    source, target = Path(settings.storage.path), Path(args.path)
    if not source.exists():
        print(f"error: no database at {source}", file=sys.stderr)
        return 1
    if target.exists() and not args.force:
        print(f"error: {target} already exists: choose a new path, or add --force", file=sys.stderr)
        return 1
    result = await backup_database(source, target, overwrite=args.force)
    size = f"{result.num_bytes / 2**20:.1f} MiB"
    print(f"backed up {source} to {target} ({result.num_messages} messages, {size})")
    return 0


async def _confirm(question: str) -> bool:
    def ask() -> str:
        print(question, end="", flush=True)
        return sys.stdin.readline()  # "" at the end of input: no

    answer = await asyncio.to_thread(ask)
    return answer.strip().lower() in _YES


def _whose(args: argparse.Namespace) -> str:
    where = "".join(
        [
            f" on {args.platform}" if args.platform else "",
            f" in chat {args.chat}" if args.chat else "",
        ]
    )
    return f"user {args.user}{where}"


def _counts(num_messages: int, num_conversations: int) -> str:
    messages = "message" if num_messages == 1 else "messages"
    dialogues = "dialogue" if num_conversations == 1 else "dialogues"
    return f"{num_messages} {messages} in {num_conversations} {dialogues}"
