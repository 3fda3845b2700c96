"""Test helpers shared across the suite; the tiny models are in tests.support.models (torch)."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURE_ENV = "R1_FIXTURE_DIR"


def fixture_dir() -> Path:
    """The tokenizer/config fixture: $R1_FIXTURE_DIR, else <repo>/../shared/fixtures/...-14b."""
    configured = os.environ.get(FIXTURE_ENV)
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "fixtures" / "deepseek-r1-distill-qwen-14b"


def has_fixture(path: Path) -> bool:
    """Whether `path` holds the files the tests read (tokenizer and configs)."""
    return all((path / name).is_file() for name in ("config.json", "tokenizer.json"))
