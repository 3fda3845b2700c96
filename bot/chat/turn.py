"""The user's turn as the model reads it: their text, the message they replied to, text files.

Front-ends collect what came with a message (the replied-to or quoted text, attached files) and
compose one turn here, so both platforms word it alike and the same limits apply. The composed
text is what is stored and prompted: later turns see the quotation and the file too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from bot.config import ChatSettings
from bot.types import ChatError

# Files read as text: prose, data and source code (by extension; or a text/* MIME type).
# fmt: off
TEXT_SUFFIXES = frozenset({
    "txt", "text", "md", "markdown", "rst", "org", "tex", "csv", "tsv", "json", "jsonl", "yaml",
    "yml", "toml", "ini", "cfg", "conf", "env", "log", "xml", "html", "htm", "css", "scss", "svg",
    "sql", "diff", "patch", "py", "pyi", "ipynb", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs",
    "java", "kt", "kts", "scala", "go", "rs", "rb", "php", "pl", "pm", "lua", "r", "m", "mm",
    "swift", "dart", "js", "mjs", "cjs", "jsx", "ts", "tsx", "vue", "sh", "bash", "zsh", "fish",
    "ps1", "bat", "cmd", "hs", "ml", "ex", "exs", "erl", "clj", "elm", "jl", "nim", "zig", "v",
    "sol", "proto", "graphql", "gradle", "cmake", "mk", "dockerfile", "makefile",
})
# fmt: on
SUPPORTED = "text messages and text files (.txt, .md, .csv, source code)"
NOT_SUPPORTED = f"I can only read {SUPPORTED}; images, voice and other files I can't read."

# The user's turn behind ➡ Continue (an answer cut at the length limit goes on).
CONTINUE_TEXT = "Please continue where you stopped."

Author = Literal["assistant", "user", "other"]


@dataclass(frozen=True, slots=True)
class Quote:
    """The message a user replied to, or the part of it they quoted."""

    text: str
    author: Author  # the bot, the user themself, or someone else
    name: str = ""  # someone else's display name


@dataclass(frozen=True, slots=True)
class TextFile:
    name: str
    text: str


def is_text_file(name: str, mime_type: str | None = None) -> bool:
    """Whether a file is one the bot reads: by its extension, else by its MIME type."""
    path = PurePosixPath(name.lower())
    suffix = path.suffix.lstrip(".") or path.name  # Makefile, Dockerfile
    if suffix in TEXT_SUFFIXES:
        return True
    return bool(mime_type and mime_type.split(";")[0].strip().lower().startswith("text/"))


class TurnComposer:
    """Checks attachments and quotes against [chat] limits and writes the turn's text."""

    def __init__(self, chat: ChatSettings) -> None:
        self._chat = chat

    @property
    def max_attachment_bytes(self) -> int:
        return self._chat.max_attachment_bytes

    def check_file(self, name: str, mime_type: str | None, size: int | None) -> None:
        """ChatError unless the file is a text file within the size limit (before downloading)."""
        if not is_text_file(name, mime_type):
            raise ChatError(f"I can't read {_shown(name)}: {NOT_SUPPORTED}")
        if size is not None and size > self._chat.max_attachment_bytes:
            raise ChatError(
                f"{_shown(name)} is too large for me ({_size(size)}; I read text files up to "
                f"{_size(self._chat.max_attachment_bytes)})."
            )

    def read_file(self, name: str, data: bytes) -> TextFile:
        """The file's text; ChatError if it is too large or not UTF-8 text."""
        if len(data) > self._chat.max_attachment_bytes:
            self.check_file(name, None, len(data))  # raises: the size was not known before
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            raise ChatError(
                f"I can't read {_shown(name)}: it is not UTF-8 text. Save it as UTF-8 "
                "(or paste the text) and send it again."
            )
        return TextFile(_shown(name), text.replace("\r\n", "\n"))

    def quote(self, text: str | None, author: Author, name: str = "") -> Quote | None:
        """The replied-to text trimmed to [chat] reply_context_chars; None if nothing to quote."""
        limit = self._chat.reply_context_chars
        text = (text or "").strip()
        if not text or limit == 0:
            return None
        if len(text) > limit:
            text = text[: limit - 1].rstrip() + "…"
        return Quote(text, author, name)

    def compose(
        self, text: str, *, quote: Quote | None = None, files: Sequence[TextFile] = ()
    ) -> str:
        """One turn: the quotation, each file in a fenced block, then the user's own text."""
        parts = []
        if quote is not None:
            parts.append(
                f"{_attribution(quote)}\n"
                + "\n".join(f"> {line}".rstrip() for line in quote.text.splitlines())
            )
        for file in files:
            fence = "`" * max(3, _longest_backtick_run(file.text) + 1)
            parts.append(f"File {file.name}:\n{fence}\n{file.text.rstrip()}\n{fence}")
        if text.strip():
            parts.append(text.strip())
        turn = "\n\n".join(parts)
        if files and len(turn) > self._chat.max_message_chars:
            raise ChatError(
                f"With {files[0].name if len(files) == 1 else 'these files'} your message is "
                f"too long for me ({len(turn)} characters; the limit is "
                f"{self._chat.max_message_chars}). Send a shorter file or a part of it."
            )
        return turn


def _attribution(quote: Quote) -> str:
    if quote.author == "assistant":
        return "(Replying to your message:)"
    if quote.author == "user":
        return "(Replying to my earlier message:)"
    return f"(Replying to a message from {quote.name or 'someone else'}:)"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _shown(name: str) -> str:
    """A file name fit to show and prompt: no path, no line breaks, not too long."""
    name = " ".join(PurePosixPath(name.replace("\\", "/")).name.split()) or "the file"
    return name if len(name) <= 80 else name[:79] + "…"


def _size(num_bytes: int) -> str:
    if num_bytes < 1024:
        return f"{num_bytes} bytes"
    if num_bytes < 1024 * 1024:
        return f"{num_bytes / 1024:.0f} KB"
    return f"{num_bytes / (1024 * 1024):.1f} MB"
