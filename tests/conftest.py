"""Suite-wide fixtures: the real DeepSeek-R1-Distill tokenizer and tiny models built from it."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face hub (also in the subprocesses they start, which inherit it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The engine's Triton kernels run on the CPU through Triton's interpreter (float32 only).
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path
from typing import Any

import pytest

from tests.support import FIXTURE_ENV, fixture_dir, has_fixture


@pytest.fixture(scope="session")
def fixture_path() -> Path:
    """The tokenizer/config fixture folder; skips the test when it is missing."""
    path = fixture_dir()
    if not has_fixture(path):
        pytest.skip(
            f"tokenizer/config fixture not found at {path}: set {FIXTURE_ENV} to the folder with"
            " DeepSeek-R1-Distill-Qwen-14B's tokenizer.json and config.json"
        )
    return path


@pytest.fixture(scope="session")
def tokenizer(fixture_path: Path) -> Any:
    """The model's real tokenizer (loading takes about two seconds, so once per session)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixture_path)


@pytest.fixture(scope="session")
def random_model(fixture_path: Path) -> Any:
    """A tiny random-weight Qwen2ForCausalLM (shared: do not modify it)."""
    from tests.support.models import build_random_model

    return build_random_model(seed=0)


@pytest.fixture(scope="session")
def random_model_folder(
    random_model: Any, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny random model saved with the tokenizer, loadable by from_pretrained offline."""
    from tests.support.models import save_model_folder

    return save_model_folder(random_model, tokenizer, tmp_path_factory.mktemp("random-model"))
