"""Config files for tests that run `python -m bot` as a subprocess."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `sections` as TOML (strings, numbers, booleans and lists of them)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_model_config(path: Path, model_folder: Path, db: Path, **sections: Any) -> Path:
    """A config that runs a saved tiny model on the CPU; `sections` add or override keys."""
    base: dict[str, dict[str, Any]] = {
        "model": {
            "path": str(model_folder),
            "quantization": "none",
            "device": "cpu",
            "dtype": "float32",
            "max_context_tokens": 4096,
            "local_files_only": True,
        },
        "storage": {"path": str(db)},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return write_config(path, base)


def bot_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m bot`: offline, no colours, no bot tokens from outside."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")
    }
    env.update(
        NO_COLOR="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def bot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
