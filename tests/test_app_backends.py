"""`[engine] backend` picks the engine: "openai" answers through a server, with no weights,
no local engine module and no CUDA, and sends the dialogue as chat messages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.configs import REPO, bot_env

# Run in a fresh interpreter: what it imported is what `python -m bot run` would import.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from bot.app import open_app
    from bot.config import EngineSettings, ModelSettings, OpenAISettings, Settings
    from bot.config import StorageSettings
    from bot.types import ChatKey
    from tests.fakes.openai_api import FakeOpenAI, answer_steps

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def main():
        async with FakeOpenAI() as server:
            server.answer = lambda body: answer_steps("Two and two.</think>\\n\\nIt is 4.")
            settings = Settings(
                engine=EngineSettings(backend="openai"),
                openai=OpenAISettings(base_url=server.base_url),
                model=ModelSettings(path=sys.argv[1], local_files_only=True),
                storage=StorageSettings(path=sys.argv[2]),
            )
            async with open_app(settings) as app:
                key = ChatKey("console", "1", "1")
                first = await (await app.service.start_reply(key, "What is 2+2?")).finished()
                second = await (await app.service.start_reply(key, "Sure?")).finished()
            import torch
            print(json.dumps({
                "answers": [first.answer, second.answer],
                "reasoning": first.reasoning,
                "tokenizer": app.tokenizer is not None,
                "local_engine_loaded": "bot.engine.local" in sys.modules,
                "cuda_initialized": torch.cuda.is_initialized(),
                "messages": server.requests[-1]["messages"],
            }))

    asyncio.run(main())
    """
)


def test_openai_backend_answers_with_no_local_engine_and_sends_the_dialogue(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "no-such-model"), str(tmp_path / "b.db")],
        cwd=REPO,
        env=bot_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["answers"] == ["It is 4.", "It is 4."]
    assert seen["reasoning"] == "Two and two."
    assert not seen["local_engine_loaded"]
    assert not seen["cuda_initialized"]
    # No tokenizer at that path: said once in the log, and the estimate trims instead.
    assert seen["tokenizer"] is False
    assert result.stderr.count("cannot load the tokenizer") == 1
    assert "3 characters a token" in result.stderr
    # The second request carries the whole dialogue, the earlier answer without its reasoning.
    roles = [m["role"] for m in seen["messages"]]
    assert roles[-3:] == ["user", "assistant", "user"]
    contents = [m["content"] for m in seen["messages"][-3:]]
    assert contents == ["What is 2+2?", "It is 4.", "Sure?"]
