"""The whole bot over loopback: fake Bot API, real PTB, ChatService, SQLite and LocalEngine."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.app import App, open_app
from bot.config import (
    ChatSettings,
    GenerationSettings,
    ModelSettings,
    Settings,
    StorageSettings,
    TelegramSettings,
)
from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from bot.frontends.telegram_ui.frontend import TelegramFrontend
from bot.reload import LiveSettings, Reloader
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_state import Call
from tests.frontends.backends import Pace, RemoteModel, as_openai, openai_engine_factory
from tests.frontends.stored import once_ended
from tests.support.models import weights_with_hookable_head

EOS_ID = 151643
ANSWER = "The answer is **forty-two**: see `main.py` for details."
ANSWER_SHOWN = "The answer is forty-two: see main.py for details."  # as Telegram shows it
ADMIN = 777
# Calls that Telegram rate-limits per chat: what pacing must space out.
PACED_METHODS = frozenset({"sendMessage", "editMessageText", "sendMessageDraft"})


class Throttle:
    """Slows the model down (a pause before each lm_head call), so a test can act mid-answer."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.num_steps = 0
        self._lock = threading.Lock()
        self.gate = threading.Event()  # cleared: the model waits (at most 60 s) before each step
        self.gate.set()

    def __call__(self, module: Any, args: Any) -> None:
        with self._lock:
            self.num_steps += 1
        if self.delay:
            time.sleep(self.delay)
        self.gate.wait(timeout=60.0)

    def attach(self, model: Any) -> Any:
        return model.lm_head.register_forward_pre_hook(self)


@dataclass
class Bot:
    """A running bot and the fake Telegram it talks to."""

    tg: FakeTelegram
    app: App
    frontend: TelegramFrontend
    settings: Settings
    reloader: Reloader | None = None
    closed: bool = field(default=False)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.frontend.close()

    def paced_calls(self, chat_id: int) -> list[Call]:
        """Answered calls of the rate-limited methods in one chat, oldest first."""
        return [
            c
            for c in self.tg.calls
            if c.method in PACED_METHODS and c.chat_id == chat_id and c.status is not None
        ]

    async def stored(self, chat_id: int, user_id: int) -> list[Any]:
        """Every stored message of that user in that chat."""
        return await self.app.store.query_messages(
            platform="telegram", chat_id=str(chat_id), user_id=str(user_id)
        )

    async def stored_once_ended(
        self, chat_id: int, user_id: int, timeout: float = 10.0
    ) -> list[Any]:
        """Like `stored`, once the last answer is stored as ended (storing follows the show)."""
        return await once_ended(lambda: self.stored(chat_id, user_id), timeout)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no answer is being shown."""
        await self.tg.wait_for(lambda: self.frontend.num_answering == 0, timeout)


def make_settings(
    tg: FakeTelegram,
    db: Path,
    *,
    telegram: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
) -> Settings:
    return Settings(
        model=ModelSettings(
            path="scripted", quantization="none", device="cpu", max_context_tokens=2048
        ),
        generation=GenerationSettings(**{"max_new_tokens": 1024, **(generation or {})}),
        storage=StorageSettings(path=str(db)),
        # No 🔄 button unless a test asks: it adds a call after each answer, which tests of
        # pacing and of the final text would have to allow for.
        chat=ChatSettings(**{"reasoning": "collapsed", "regenerate_button": False, **(chat or {})}),
        telegram=TelegramSettings(
            **{
                "enabled": True,
                "token": tg.token,
                "base_url": tg.base_url,
                "edit_interval": 0.2,
                "admins": (ADMIN,),
                **(telegram or {}),
            }
        ),
    )


def engine_factory(model: Any, tokenizer: Any, *, slot_tokens: int = 2048) -> Any:
    def build(settings: Settings) -> tuple[Any, LocalEngine]:
        runner = ModelRunner(
            weights_with_hookable_head(model),
            CacheShape(num_slots=4, slot_tokens=slot_tokens),
            use_cuda_graphs=False,
        )
        return tokenizer, LocalEngine(runner, tokenizer, eos_token_ids={EOS_ID}, warm_up=False)

    return build


@contextlib.asynccontextmanager
async def running_bot(
    model: Any,
    tokenizer: Any,
    tmp_path: Path,
    *,
    telegram: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
    frontend_options: dict[str, Any] | None = None,
    config_file: Path | None = None,
) -> AsyncIterator[Bot]:
    """Everything wired as `python -m bot run` wires it, with the model and server swapped.

    `model` is the scripted torch model (the local engine) or a RemoteModel (the openai engine
    against the fake OpenAI server saying the same).
    `config_file`: the settings are written there, and /reload (bot.reloader) re-reads it.
    """
    async with contextlib.AsyncExitStack() as stack:
        tg = await stack.enter_async_context(FakeTelegram())
        settings = make_settings(
            tg, tmp_path / "bot.db", telegram=telegram, chat=chat, generation=generation
        )
        if isinstance(model, RemoteModel):
            settings = as_openai(settings)
            factory = await stack.enter_async_context(openai_engine_factory(model, tokenizer))
        else:
            factory = engine_factory(model, tokenizer)
        async with open_app(settings, engine_factory=factory) as app:
            options = {"poll_timeout": 1.0, "tick_interval": 1.0, **(frontend_options or {})}
            reloader = None
            if config_file is not None:
                write_settings(config_file, settings)
                live = LiveSettings(settings)
                live.subscribe(
                    lambda s: app.service.apply_settings(chat=s.chat, generation=s.generation)
                )
                reloader = Reloader(live, config_file, {})
                options.update(live=live, reloader=reloader)
            frontend = TelegramFrontend(
                settings.telegram, app.service, chat=settings.chat, metrics=app.metrics, **options
            )
            await frontend.start()
            bot = Bot(tg, app, frontend, settings, reloader)
            try:
                yield bot
            finally:
                await bot.close()


def write_settings(path: Path, settings: Settings, **changes: dict[str, Any]) -> Path:
    """`settings` as a TOML config file; `changes` override keys per section."""
    from tests.support.configs import write_config

    sections = {
        name: {**vars(getattr(settings, name)), **changes.get(name, {})}
        for name in ("model", "generation", "storage", "chat", "telegram")
    }
    return write_config(path, sections)


def with_telegram(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, telegram=replace(settings.telegram, **changes))


THINK_END_ID = 151649  # </think>
PARAGRAPH_ID = 271  # "\n\n"


@dataclass
class Scripted:
    """A scripted tiny model and what it says: reasoning words, then the answer."""

    model: Any
    throttle: Throttle
    reasoning: str
    answer: str
    num_tokens: int


def on_backend(backend: str, scripted: Scripted) -> Scripted:
    """The same words from the given backend: for "openai" the fake server streams them."""
    if backend == "local":
        return scripted
    remote = RemoteModel(f"{scripted.reasoning}</think>\n\n{scripted.answer}", Pace())
    return replace(scripted, model=remote, throttle=remote.throttle)


def build_scripted(
    tokenizer: Any,
    *,
    num_reasoning_words: int,
    answer: str | list[int],
    hidden_size: int | None = None,
) -> Scripted:
    """reasoning (distinct words) + </think> + answer; every token with one successor."""
    from tests.support.models import build_scripted_model, distinct_word_ids

    answer_ids = (
        tokenizer.encode(answer, add_special_tokens=False) if isinstance(answer, str) else answer
    )
    pool = distinct_word_ids(tokenizer, num_reasoning_words + len(answer_ids) + 16)
    words = [w for w in pool if w not in answer_ids][:num_reasoning_words]
    ids = [*words, THINK_END_ID, PARAGRAPH_ID, *answer_ids]
    model = build_scripted_model(tokenizer, ids, hidden_size=hidden_size)
    throttle = Throttle()
    throttle.attach(model)
    return Scripted(
        model=model,
        throttle=throttle,
        reasoning=tokenizer.decode(words).strip(),
        answer=tokenizer.decode(answer_ids).strip(),
        num_tokens=len(ids),
    )


def final_texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    """Bot messages that are done: no Stop button (🔄 may be there), no 'still writing' marker."""
    return [
        m.text or ""
        for m in tg.chat(chat_id).bot_messages
        if not any(str(b.get("callback_data", "")).startswith("stop:") for b in m.buttons)
        and not (m.text or "").endswith("▌")
    ]


# Slack for the fake server's arrival times (client and server share one event loop).
TIMING_SLACK = 0.05


def assert_paced(calls: list[Call], *, interval: float) -> None:
    """No two calls closer than `interval` (less the slack)."""
    times = [c.at for c in calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 2, "too few calls to judge the pacing"
    assert min(gaps) >= interval - TIMING_SLACK, f"calls {min(gaps):.3f} s apart: {gaps}"


def assert_budget(calls: list[Call], *, max_calls: int, window: float) -> None:
    """No `window` seconds hold more than `max_calls` calls."""
    times = [c.at for c in calls]
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t < start + window - TIMING_SLACK]
        assert len(inside) <= max_calls, f"{len(inside)} calls within {window} s from {start}"
