"""Build the remote engine from settings: the tokenizer (optional) and an OpenAIEngine."""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Settings
from bot.engine.remote import OpenAIEngine

log = logging.getLogger("bot.engine.remote")


def build_openai_engine(settings: Settings) -> tuple[Any | None, OpenAIEngine]:
    """The tokenizer (None if it cannot be loaded) and an OpenAIEngine; loads no weights.

    Blocking (the tokenizer loads from disk or the hub): run it in a thread. Same shape as the
    local engine's factory, so the app picks either by `[engine] backend`.
    """
    return load_tokenizer_or_none(settings), engine_from_settings(settings)


def load_tokenizer_or_none(settings: Settings) -> Any | None:
    """`[model] path`'s tokenizer for trimming dialogues; None (said once) when unavailable."""
    from transformers import AutoTokenizer

    model = settings.model
    try:
        return AutoTokenizer.from_pretrained(model.path, local_files_only=model.local_files_only)
    except Exception as exc:  # no such folder, no hub access, a broken file: all the same here
        log.warning(
            "cannot load the tokenizer of %s (%s); dialogues are trimmed by an estimate of "
            "3 characters a token",
            model.path,
            _first_line(exc),
        )
        return None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def engine_from_settings(settings: Settings) -> OpenAIEngine:
    remote = settings.openai
    return OpenAIEngine(
        remote.base_url,
        model=remote.model,
        api_key=remote.api_key,
        max_concurrency=remote.max_concurrency,
        max_queue=settings.engine.max_queue,
        max_context_tokens=settings.model.max_context_tokens,
        connect_timeout=remote.connect_timeout,
        read_timeout=remote.read_timeout,
    )
