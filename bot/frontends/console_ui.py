"""Terminal front-end: streams reasoning (dimmed) and the answer; Ctrl-C stops an answer.

On a terminal, lines are read with readline (editing, and the session's earlier lines on the up
arrow), and Ctrl-D while an answer is written stops it and quits. Piped input is read line by
line; its end does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from bot.chat.commands import (
    CONSOLE,
    NO_STATS,
    NOT_RELOADABLE,
    NOTHING_TO_STOP,
    RESET_DONE,
    SYSTEM_CLEARED,
    UNKNOWN_COMMAND,
    is_clear,
)
from bot.chat.service import ChatService, Reply
from bot.metrics import Metrics, format_stats
from bot.render.math import render_math
from bot.types import (
    AnswerDelta,
    ChatError,
    ChatKey,
    Queued,
    ReasoningDelta,
    ReplyFinished,
    Started,
)

CTRL_D = b"\x04"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

if TYPE_CHECKING:
    from bot.reload import Reloader

CONSOLE_KEY = ChatKey("console", "local", "local")
_RESUME_SHOWN = 2  # earlier messages echoed when a stored dialogue resumes


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.dim = "\x1b[2m" if enabled else ""
        self.bold = "\x1b[1m" if enabled else ""
        self.reset = "\x1b[0m" if enabled else ""


class _PipedLines:
    """Lines from a pipe or file, read ahead by a thread; None once the input has ended."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        # A daemon thread, not the default executor: a read blocked at exit must not hang it.
        def read() -> None:
            for line in self._stream:
                loop.call_soon_threadsafe(self._lines.put_nowait, line)
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        threading.Thread(target=read, name="console-input", daemon=True).start()

    async def read_line(self, prompt: str, write: Callable[[str], None]) -> str | None:
        write(prompt)
        return await self._lines.get()

    def typed(self) -> str:
        return ""


class _TerminalLines:
    """Lines typed at a terminal, through readline (editing and history), one read at a time.

    Only one read is ever open, and only at the prompt: readline redraws its line from what it
    printed itself, so nothing else may write while it reads.
    """

    def __init__(self) -> None:
        with contextlib.suppress(ImportError):  # not on every platform: plain input() then
            import readline

            # Pasted text arrives as typed text (no escape sequences around it).
            readline.parse_and_bind("set enable-bracketed-paste off")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        return None

    def typed(self) -> str:
        """What is typed on the line being read so far."""
        try:
            import readline
        except ImportError:
            return ""
        return readline.get_line_buffer()

    async def read_line(self, prompt: str, write: Callable[[str], None]) -> str | None:
        loop = asyncio.get_running_loop()
        line: asyncio.Future[str | None] = loop.create_future()

        # readline must not count the colour codes as characters of the line.
        prompt = _ANSI.sub(lambda m: f"\x01{m.group(0)}\x02", prompt)

        def read() -> None:
            try:
                text: str | None = input(prompt)
            except EOFError:
                text = None
            loop.call_soon_threadsafe(line.set_result, text)

        threading.Thread(target=read, name="console-input", daemon=True).start()
        return await line

    @contextlib.contextmanager
    def watch_keys(self, on_ctrl_d: Callable[[], None]) -> Iterator[None]:
        """While an answer is written: keys are not echoed, Ctrl-D calls `on_ctrl_d`."""
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        # cbreak: keys arrive one by one, not echoed; Ctrl-C still raises SIGINT (stop).
        tty.setcbreak(fd)
        loop = asyncio.get_running_loop()

        def on_key() -> None:
            if CTRL_D in os.read(fd, 64):
                on_ctrl_d()

        loop.add_reader(fd, on_key)
        try:
            yield
        finally:
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _MarkdownAnswer:
    """The answer re-rendered as terminal Markdown while it streams (rich), below the reasoning."""

    REFRESHES_PER_SECOND = 8

    def __init__(self, output: TextIO) -> None:
        from rich.console import Console  # only for a person at a colour terminal

        self._console = Console(file=output, force_terminal=True, highlight=False)
        self._text = ""
        self._live: Any = None
        self._shown_at = 0.0

    def add(self, text: str) -> None:
        from rich.live import Live

        self._text += text
        if self._live is None:
            # Taller than the screen: the top scrolls away as plain output (nothing repeated).
            self._live = Live(
                console=self._console, auto_refresh=False, vertical_overflow="visible"
            )
            self._live.start()
        now = time.monotonic()
        if now - self._shown_at >= 1 / self.REFRESHES_PER_SECOND:
            self._show()
            self._shown_at = now

    def close(self) -> None:
        if self._live is not None:
            self._show(is_complete=True)
            self._live.stop()
            self._live = None

    def _show(self, *, is_complete: bool = False) -> None:
        from rich.markdown import Markdown

        # LaTeX as Unicode, as in the chats (a formula still arriving is held back).
        shown = render_math(self._text, is_complete=is_complete)
        self._live.update(Markdown(shown), refresh=True)


class ConsoleUI:
    """Reads lines, sends them to the chat service, prints the streamed reply."""

    def __init__(
        self,
        service: ChatService,
        *,
        reasoning_mode: str,
        output: TextIO = sys.stdout,
        key: ChatKey = CONSOLE_KEY,
        metrics: Metrics | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._reloader = reloader
        self._service = service
        self._metrics = metrics
        self._mode = reasoning_mode
        self._out = output
        self._key = key
        is_colour_terminal = output.isatty() and "NO_COLOR" not in os.environ
        self._style = _Style(is_colour_terminal)
        self._renders_markdown = is_colour_terminal
        self._reply: Reply | None = None
        self._input = _TerminalLines() if _is_terminal(sys.stdin) else _PipedLines(sys.stdin)
        self._is_quitting = False  # Ctrl-D came while an answer was written

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._input.start(loop)
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        try:
            await self._show_resumed()
            self._write("Type a message and press Enter. /help lists commands; Ctrl-D quits.\n")
            while not self._is_quitting:
                line = await self._input.read_line(self._prompt(), self._write)
                if line is None:
                    self._write("\n")
                    return
                if not await self._handle(line.strip()):
                    return
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def _prompt(self) -> str:
        return f"{self._style.bold}you>{self._style.reset} "

    def _on_interrupt(self) -> None:
        if self._reply is not None:
            self._reply.stop()
        else:
            # At the prompt: the hint on its own line, then the prompt and what was typed so
            # far again (readline goes on editing it where its cursor was: at the end).
            self._write("\n(Ctrl-D or /exit quits)\n")
            self._write(self._prompt() + self._input.typed())

    def _quit_now(self) -> None:
        """Ctrl-D during an answer: stop it (it is stored as stopped) and quit after it lands."""
        self._is_quitting = True
        if self._reply is not None:
            self._reply.stop()

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
            self._write(CONSOLE.help_text() + "\n")
        elif command == "/reset":
            await self._service.reset(self._key)
            self._write(RESET_DONE + "\n")
        elif command == "/system":  # whoever holds the terminal runs the bot: an admin
            await self._system(argument)
        elif command == "/stop":  # an answer being written is stopped with Ctrl-C
            self._write(NOTHING_TO_STOP + "\n")
        elif command == "/stats":
            stats = NO_STATS if self._metrics is None else format_stats(self._metrics.snapshot())
            self._write(stats + "\n")
        elif command == "/reload" and self._reloader is None:
            self._write(NOT_RELOADABLE + "\n")
        elif command == "/reload" and self._reloader is not None:
            self._write((await self._reloader.reload()).summary() + "\n")
        else:
            self._write(UNKNOWN_COMMAND + "\n")
        return True

    async def _system(self, argument: str) -> None:
        key = self._key
        if not argument:
            current = await self._service.system_prompt(key.platform, key.chat_id)
            self._write(CONSOLE.system_shown(current.text, is_custom=current.is_custom) + "\n")
            return
        if is_clear(argument):
            await self._service.set_system_prompt(key.platform, key.chat_id, None)
            self._write(SYSTEM_CLEARED + "\n")
            return
        try:
            await self._service.set_system_prompt(key.platform, key.chat_id, argument)
        except ChatError as exc:
            self._write(f"{exc}\n")
        else:
            self._write(CONSOLE.system_set() + "\n")

    async def _answer(self, text: str) -> None:
        try:
            self._reply = await self._service.start_reply(self._key, text)
        except ChatError as exc:
            self._write(f"{exc}\n")
            return
        try:
            with self._watching_for_quit():
                await self._print_reply(self._reply)
        finally:
            self._reply = None

    @contextlib.contextmanager
    def _watching_for_quit(self) -> Iterator[None]:
        # Piped input has no Ctrl-D: its lines are answered one after another until it ends.
        if not isinstance(self._input, _TerminalLines):
            yield
            return
        with self._input.watch_keys(self._quit_now):
            yield

    async def _print_reply(self, reply: Reply) -> None:
        markdown = _MarkdownAnswer(self._out) if self._renders_markdown else None
        try:
            await self._print_events(reply, markdown)
        finally:
            if markdown is not None:
                markdown.close()

    async def _print_events(self, reply: Reply, markdown: _MarkdownAnswer | None) -> None:
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
                if markdown is not None:
                    markdown.add(event.text)
                else:
                    self._write(event.text)
            elif isinstance(event, ReplyFinished):
                if in_reasoning:
                    self._end_reasoning(thinking_since)
                if markdown is not None:
                    markdown.close()  # rich ends the block with its own newline
                else:
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
        history = await self._service.history(self._key)
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


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False
