"""The whole bot over loopback: fake Discord, real discord.py, ChatService, SQLite and engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import App, open_app
from bot.config import (
    ChatSettings,
    DiscordSettings,
    GenerationSettings,
    ModelSettings,
    Settings,
    StorageSettings,
)
from bot.engine.local import LocalEngine
from bot.engine.runner import CacheShape, ModelRunner
from bot.frontends.discord_ui.frontend import DiscordFrontend
from bot.reload import LiveSettings
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_state import FakeGuild, FakeRole, FakeUser, MessageRecord
from tests.frontends.backends import RemoteModel, as_openai, openai_engine_factory
from tests.frontends.stored import once_ended
from tests.support.models import weights_with_hookable_head

EOS_ID = 151643
ADMIN_NAME = "root"
EDIT_INTERVAL = 0.2
EDIT_ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/@original"
EDIT_FOLLOWUP = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "POST /webhooks/{application_id}/{token}"
CALLBACK = "POST /interactions/{interaction_id}/{token}/callback"
SEND = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"


class Throttle:
    """Slows the model down (a pause before each lm_head call), so a test can act mid-answer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.num_steps = 0
        self._lock = threading.Lock()

    def __call__(self, module: Any, args: Any) -> None:
        with self._lock:
            self.num_steps += 1
        if self.delay:
            time.sleep(self.delay)


@contextlib.contextmanager
def throttled(model: Any, delay: float) -> Iterator[Throttle]:
    """The model pauses `delay` seconds per step while the block runs."""
    if isinstance(model, RemoteModel):  # the fake server pauses before each piece instead
        model.throttle.delay = delay
        try:
            yield model.throttle  # type: ignore[misc]
        finally:
            model.throttle.delay = 0.0
        return
    throttle = Throttle(delay)
    handle = model.lm_head.register_forward_pre_hook(throttle)
    try:
        yield throttle
    finally:
        handle.remove()


def is_done(message: MessageRecord | None) -> bool:
    """The reply has landed its final text: no Stop button, no 'still writing' marker."""
    return bool(message and message.content and not message.components) and (
        "▌" not in message.content
    )


def assert_paced(message: MessageRecord, *, after: int = 0) -> None:
    """Each change of `message` (from change `after` on) came at least EDIT_INTERVAL after the
    one before it, and changed something."""
    # The bot times its calls as it sends them; the fake as it handles them. The difference in
    # loopback latency between two calls is a few milliseconds: this allows for a stall.
    slack = 0.05
    history = message.history
    changes = history[1:] if message.kind == "original" else history  # [0]: the deferral
    for before, later in itertools.pairwise(changes[after:]):
        assert later.at - before.at >= EDIT_INTERVAL - slack, (before, later)
        assert (later.content, later.components) != (before.content, before.components)


@dataclass
class Bot:
    """A running bot, the fake Discord it talks to, and a small cast of users."""

    dc: FakeDiscord
    app: App
    frontend: DiscordFrontend
    settings: Settings
    alice: FakeUser  # an ordinary member
    bob: FakeUser  # another ordinary member
    mona: FakeUser  # a member with Manage Server
    root: FakeUser  # a configured admin
    guild: FakeGuild
    live: LiveSettings  # change it as a config reload would
    elsewhere: FakeGuild | None = None  # with extra_places: a second guild (alice, bob)
    friends: FakeRole | None = None  # with extra_places: a role of bob's in the guild

    async def stored(self, channel_id: int, user: FakeUser) -> list[Any]:
        """Every stored message of that user in that channel, oldest first."""
        return await self.app.store.query_messages(
            platform="discord", chat_id=str(channel_id), user_id=str(user.id)
        )

    async def stored_once_ended(
        self, channel_id: int, user: FakeUser, timeout: float = 10.0
    ) -> list[Any]:
        """Like `stored`, once the last answer is stored as ended (storing follows the show)."""
        return await once_ended(lambda: self.stored(channel_id, user), timeout)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no answer is being shown any more (polled: the fake sees nothing of this)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.frontend.replies.num_running:
            if loop.time() > deadline:
                raise TimeoutError(f"answers still running after {timeout}s")
            await asyncio.sleep(0.01)

    def bot_messages(self, channel: Any) -> list[MessageRecord]:
        """The bot's messages in `channel` that everyone sees (ephemeral ones left out)."""
        return [
            m
            for m in self.dc.messages_in(channel)
            if m.author is self.dc.bot and not m.is_ephemeral
        ]


def longest_words(tokenizer: Any, count: int) -> list[str]:
    """`count` long words that are one token each (with a leading space), longest first."""
    return list(_long_words(tokenizer)[:count])


@functools.cache
def _long_words(tokenizer: Any) -> tuple[str, ...]:
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    words = []
    for token_id, piece in enumerate(vocab):
        word = piece[1:]
        is_word = piece.startswith("Ġ") and len(word) >= 12 and word.isascii() and word.isalpha()
        # Only words that encode back to this one token, so the script is what the model emits.
        if is_word and tokenizer.encode(" " + word, add_special_tokens=False) == [token_id]:
            words.append(word)
    words.sort(key=lambda w: (-len(w), w))
    return tuple(words)


def make_settings(
    dc: FakeDiscord,
    db: Path,
    *,
    admins: Sequence[int] = (),
    discord: dict[str, Any] | None = None,
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
        discord=DiscordSettings(
            **{
                "enabled": True,
                "token": dc.token,
                "api_base": dc.api_base,
                "edit_interval": EDIT_INTERVAL,
                "admins": tuple(admins),
                **(discord or {}),
            }
        ),
    )


def engine_factory(model: Any, tokenizer: Any, *, num_slots: int = 4, max_queue: int = 256) -> Any:
    def build(settings: Settings) -> tuple[Any, LocalEngine]:
        runner = ModelRunner(
            weights_with_hookable_head(model),
            CacheShape(num_slots=num_slots, slot_tokens=2048),
            use_cuda_graphs=False,
        )
        engine = LocalEngine(
            runner, tokenizer, eos_token_ids={EOS_ID}, max_queue=max_queue, warm_up=False
        )
        return tokenizer, engine

    return build


@contextlib.asynccontextmanager
async def running_bot(
    model: Any,
    tokenizer: Any,
    tmp_path: Path,
    *,
    fake_options: dict[str, Any] | None = None,
    discord: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
    frontend_options: dict[str, Any] | None = None,
    num_slots: int = 4,
    max_queue: int = 256,
    guild_commands: bool = False,
    allowed_users: Sequence[str] = (),
    extra_places: bool = False,
) -> AsyncIterator[Bot]:
    """Everything wired as `python -m bot run` wires it, with the model and the server swapped.

    `model` is the scripted torch model (the local engine) or a RemoteModel (the openai engine
    against the fake OpenAI server saying the same; `num_slots` streams at once).
    `extra_places`: the guild also has a channel "bots" and a role "Friends" (bob's), and a
    second guild "Elsewhere" has alice and bob: places and roles for the allowlists.
    """
    async with contextlib.AsyncExitStack() as stack:
        dc = await stack.enter_async_context(FakeDiscord(**(fake_options or {})))
        alice, bob, mona = dc.add_user("alice"), dc.add_user("bob"), dc.add_user("mona")
        root = dc.add_user(ADMIN_NAME)
        channels = ("general", "bots") if extra_places else ("general",)
        guild = dc.add_guild("Lab", members=[alice, bob, root], managers=[mona], channels=channels)
        elsewhere = friends = None
        if extra_places:
            # Before the bot connects: the guild it receives then knows the role.
            friends = FakeRole(dc.world.ids.next(), "Friends", 0, position=2)
            guild.roles.append(friends)
            guild.add_member(bob, roles=[friends])
            elsewhere = dc.add_guild("Elsewhere", members=[alice, bob])
        cast = {"alice": alice, "bob": bob, "mona": mona, ADMIN_NAME: root}
        if guild_commands:
            discord = {"guild_ids": (guild.id,), **(discord or {})}
        if allowed_users:
            discord = {"allowed_users": tuple(cast[n].id for n in allowed_users), **(discord or {})}
        settings = make_settings(
            dc,
            tmp_path / "bot.db",
            admins=(root.id,),
            discord=discord,
            chat=chat,
            generation=generation,
        )
        if isinstance(model, RemoteModel):
            settings = as_openai(settings)
            factory = await stack.enter_async_context(
                openai_engine_factory(
                    model, tokenizer, max_concurrency=num_slots, max_queue=max_queue
                )
            )
        else:
            factory = engine_factory(model, tokenizer, num_slots=num_slots, max_queue=max_queue)
        async with open_app(settings, engine_factory=factory) as app:
            live = LiveSettings(settings)
            options = {"guild_ready_timeout": 0.1, "live": live, **(frontend_options or {})}
            frontend = DiscordFrontend(
                settings.discord, app.service, chat=settings.chat, metrics=app.metrics, **options
            )
            await frontend.start()
            bot = Bot(
                dc, app, frontend, settings, alice, bob, mona, root, guild, live, elsewhere, friends
            )
            try:
                yield bot
            finally:
                # As `python -m bot run` stops: no new work, cut answers short, land, disconnect.
                await frontend.stop_receiving()
                await app.service.interrupt_all()
                await frontend.close()
