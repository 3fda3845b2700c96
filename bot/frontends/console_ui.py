"""Terminal front-end: streams reasoning (dimmed) and the answer; Ctrl-C stops an answer."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from bot.chat.service import ChatService, Reply
from bot.types import (
    AnswerDelta,
    ChatError,
    ChatKey,
    Queued,
    ReasoningDelta,
    ReplyFinished,
    Started,
)

if TYPE_CHECKING:
    from bot.reload import Reloader

HELP = """Commands:
  /reset           start a new dialogue (the old one stays in the history)
  /system          show the system prompt
  /system TEXT     set the system prompt;  /system clear  restores the default
  /reload          re-read the config file (limits, system prompt, log level)
  /help            this help
  /exit            quit (or Ctrl-D)
Ctrl-C stops the answer being written."""

CONSOLE_KEY = ChatKey("console", "local", "local")
_RESUME_SHOWN = 2  # earlier messages echoed when a stored dialogue resumes


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.dim = "\x1b[2m" if enabled else ""
        self.bold = "\x1b[1m" if enabled else ""
        self.reset = "\x1b[0m" if enabled else ""


class ConsoleUI:
    """Reads lines, sends them to the chat service, prints the streamed reply."""

    def __init__(
        self,
        service: ChatService,
        store: object,
        *,
        reasoning_mode: str,
        output: TextIO = sys.stdout,
        key: ChatKey = CONSOLE_KEY,
        reloader: Reloader | None = None,
    ) -> None:
        self._reloader = reloader
        self._service = service
        self._store = store
        self._mode = reasoning_mode
        self._out = output
        self._key = key
        self._style = _Style(output.isatty() and "NO_COLOR" not in os.environ)
        self._reply: Reply | None = None
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._start_reader(loop)
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        try:
            await self._show_resumed()
            self._write("Type a message and press Enter. /help lists commands; Ctrl-D quits.\n")
            while True:
                self._write(f"{self._style.bold}you>{self._style.reset} ")
                line = await self._lines.get()
                if line is None:
                    self._write("\n")
                    return
                if not await self._handle(line.strip()):
                    return
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        # A daemon thread, not the default executor: a read blocked at exit must not hang it.
        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self._lines.put_nowait, line)
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        threading.Thread(target=read, name="console-input", daemon=True).start()

    def _on_interrupt(self) -> None:
        if self._reply is not None:
            self._reply.stop()
        else:
            self._write("\n(Ctrl-D or /exit quits)\n")
            self._write(f"{self._style.bold}you>{self._style.reset} ")

    async def _handle(self, line: str) -> bool:
        """Act on one input line; False means quit."""
        if not line:
            return True
        if line.startswith("/"):
            command, _, argument = line.partition(" ")
            return await self._command(command.lower(), argument.strip())
        await self._answer(line)
        return True

    async def _command(self, command: str, argument: str) -> bool:
        if command in ("/exit", "/quit"):
            return False
        if command == "/help":
            self._write(HELP + "\n")
        elif command == "/reset":
            await self._service.reset(self._key)
            self._write("Started a new dialogue.\n")
        elif command == "/system":
            await self._system(argument)
        elif command == "/stop":
            self._write("Nothing to stop.\n")
        elif command == "/reload" and self._reloader is not None:
            self._write((await self._reloader.reload()).summary() + "\n")
        else:
            self._write(f"Unknown command {command}. Try /help.\n")
        return True

    async def _system(self, argument: str) -> None:
        key = self._key
        if not argument:
            current = await self._service.system_prompt(key.platform, key.chat_id)
            label = "custom" if current.is_custom else "default"
            self._write(f"System prompt ({label}): {current.text or '(empty)'}\n")
            return
        if argument.lower() == "clear":
            await self._service.set_system_prompt(key.platform, key.chat_id, None)
            self._write("System prompt restored to the default.\n")
            return
        try:
            await self._service.set_system_prompt(key.platform, key.chat_id, argument)
        except ChatError as exc:
            self._write(f"{exc}\n")
        else:
            self._write("System prompt set.\n")

    async def _answer(self, text: str) -> None:
        try:
            self._reply = await self._service.start_reply(self._key, text)
        except ChatError as exc:
            self._write(f"{exc}\n")
            return
        try:
            await self._print_reply(self._reply)
        finally:
            self._reply = None

    async def _print_reply(self, reply: Reply) -> None:
        style = self._style
        in_reasoning = False
        thinking_since: float | None = None
        async for event in reply:
            if isinstance(event, Queued):
                self._write(f"{style.dim}(in queue: position {event.position}){style.reset}\n")
            elif isinstance(event, Started):
                thinking_since = time.monotonic()
            elif isinstance(event, ReasoningDelta):
                if self._mode == "hidden":
                    if not in_reasoning:
                        self._write(f"{style.dim}(thinking…){style.reset}")
                    in_reasoning = True
                    continue
                if not in_reasoning:
                    self._write(style.dim if self._mode == "collapsed" else "")
                    in_reasoning = True
                self._write(event.text)
            elif isinstance(event, AnswerDelta):
                if in_reasoning:
                    self._end_reasoning(thinking_since)
                    in_reasoning = False
                self._write(event.text)
            elif isinstance(event, ReplyFinished):
                if in_reasoning:
                    self._end_reasoning(thinking_since)
                self._write("\n")
                if event.note:
                    self._write(f"{style.dim}{event.note}{style.reset}\n")

    def _end_reasoning(self, since: float | None) -> None:
        seconds = 0.0 if since is None else time.monotonic() - since
        self._write(
            f"{self._style.reset}\n{self._style.dim}(thought for {seconds:.0f} s)"
            f"{self._style.reset}\n\n"
        )

    async def _show_resumed(self) -> None:
        history = await self._store.history(self._key)
        if not history:
            return
        self._write(
            f"{self._style.dim}(resuming a dialogue of {len(history)} messages)"
            f"{self._style.reset}\n"
        )
        for message in history[-_RESUME_SHOWN:]:
            who = "you" if message.role == "user" else "bot"
            self._write(f"{self._style.dim}{who}> {message.content}{self._style.reset}\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
