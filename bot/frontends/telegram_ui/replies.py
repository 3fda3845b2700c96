"""Runs each answer in a Telegram chat: renderer + sink, typing action, Stop button, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.chat.commands import (
    ANSWER_ALREADY_FINISHED,
    NOT_MY_BUTTON,
    ONLY_ASKER_OR_ADMIN_STOPS,
    STOPPING_ANSWER,
    only_the_asker_can,
    only_the_latest_can_be,
)
from bot.chat.service import ChatService, Reply
from bot.chat.turn import CONTINUE_TEXT
from bot.frontends.telegram_ui.messages import is_group_chat, target_of
from bot.frontends.telegram_ui.notices import Notices
from bot.frontends.telegram_ui.sink import ChatTarget, TelegramSink
from bot.render.delivery import DeliveryOptions
from bot.render.layout import ReasoningMode, TelegramLayout
from bot.render.pacing import ChatPacer, ChatPacers, Clock
from bot.render.replies import ReplyTracker, render_reply
from bot.render.stream import StreamRenderer
from bot.store.records import InterruptedReply
from bot.types import AnswerDelta, ChatError, ChatKey, ReplyEvent, ReplyFinished, ReplyStatus

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000  # dialogues whose latest answer carries live buttons

STOP_PREFIX = "stop:"
STOP_LABEL = "⏹ Stop"
REGENERATE_PREFIX = "regen:"
REGENERATE_LABEL = "🔄 Regenerate"
CONTINUE_PREFIX = "cont:"
CONTINUE_LABEL = "➡ Continue"
CONTROL_TEXT = "✍️ Writing… tap Stop to cancel."
SHUTDOWN_NOTE = "⚠️ Interrupted: the bot is restarting. Send your message again in a moment."
RESTART_NOTE = (
    "⚠️ The bot restarted while writing this answer; what it wrote so far is kept in the "
    "dialogue. Send your message again for a full answer."
)
CLOSING_TEXT = "I'm restarting right now; please send that again in a minute."
TYPING_EVERY = 4.5
PLATFORM = "telegram"  # Telegram shows the typing action for about 5 s


@dataclass
class _Running:
    """One answer being shown."""

    reply: Reply
    user_id: int
    message: Message
    task: asyncio.Task[None] | None = None
    control: Message | None = None  # the message with the Stop button (draft streaming)
    final: ReplyFinished | None = None
    answering: asyncio.Event = field(default_factory=asyncio.Event)  # answer text has started


class _DraftSupport:
    """Where sendMessageDraft works: private chats, until the server refuses it."""

    def __init__(self, enabled: bool) -> None:
        self.is_enabled = enabled
        self._refused_chats: set[int] = set()

    def allows(self, chat_id: int) -> bool:
        return self.is_enabled and chat_id not in self._refused_chats

    def refuse(self, chat_id: int, everywhere: bool) -> None:
        if everywhere:
            self.is_enabled = False
        elif len(self._refused_chats) < 100_000:
            self._refused_chats.add(chat_id)


class _Watched:
    """The reply's events, noting when the answer proper starts (the typing action ends)."""

    def __init__(self, running: _Running) -> None:
        self._reply = running.reply
        self._answering = running.answering
        self._running = running

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self

    async def __anext__(self) -> ReplyEvent:
        event = await self._reply.__anext__()
        if isinstance(event, ReplyFinished):
            self._running.final = event
        if isinstance(event, ReplyFinished) or (
            isinstance(event, AnswerDelta) and event.text.strip()
        ):
            self._answering.set()
        return event


@dataclass(frozen=True)
class ReplyOptions:
    """How answers are shown (from [telegram] and [chat] settings)."""

    reasoning: ReasoningMode = "collapsed"
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    use_drafts: bool = True
    regenerate_button: bool = True  # 🔄 under the last answer of each dialogue


class ReplyRunner:
    """Starts answers, shows them while they stream, and lands every final text."""

    def __init__(
        self,
        bot: Bot,
        service: ChatService,
        pacers: ChatPacers,
        notices: Notices,
        clock: Clock,
        *,
        options: ReplyOptions,
    ) -> None:
        self._bot = bot
        self._service = service
        self._pacers = pacers
        self._notices = notices
        self._clock = clock
        self._options = options
        self._drafts = _DraftSupport(options.use_drafts)
        self._running: dict[int, _Running] = {}
        self._tokens = itertools.count(1)
        self._tracker = ReplyTracker()  # every answer's task, and begin()s still starting
        self._latest: dict[ChatKey, int] = {}  # the message carrying 🔄, per dialogue
        self._background: set[asyncio.Task[None]] = set()

    def set_edit_interval(self, seconds: float) -> None:
        """A reloaded edit interval: for answers started from now on."""
        delivery = dataclasses.replace(self._options.delivery, edit_interval=seconds)
        self._options = dataclasses.replace(self._options, delivery=delivery)

    @property
    def num_running(self) -> int:
        return len(self._running)

    async def begin(self, message: Message, key: ChatKey, text: str) -> None:
        """Start answering `text`; a refusal (busy, empty, too long) is answered with a notice."""
        target = target_of(message)
        if self._tracker.is_closing:
            await self._notices.send(target, CLOSING_TEXT, is_group=is_group_chat(message))
            return
        try:
            reply = await self._starting(self._service.start_reply(key, text))
        except ChatError as error:
            await self._notices.send(target, str(error), is_group=is_group_chat(message))
            return
        self._run(message, key, reply)

    async def answer_button(
        self, data: str, user_id: int, answer: Message | None, *, is_allowed: bool
    ) -> str:
        """Handle 🔄 (answer again) or ➡ (go on) under `answer`; returns the toast text."""
        is_continue = data.startswith(CONTINUE_PREFIX)
        verb = "continue" if is_continue else "regenerate"
        try:
            owner = int(data.partition(":")[2])
        except ValueError:
            return NOT_MY_BUTTON
        if answer is None or user_id != owner or not is_allowed:
            return only_the_asker_can(verb)
        key = ChatKey(PLATFORM, str(answer.chat.id), str(owner))
        if self._latest.get(key) != answer.message_id or self._tracker.is_closing:
            return only_the_latest_can_be(verb)
        start = (
            self._service.start_reply(key, CONTINUE_TEXT)
            if is_continue
            else self._service.regenerate(key)
        )
        try:
            reply = await self._starting(start)
        except ChatError as error:
            return str(error)
        del self._latest[key]
        # The old answer stays in the chat without its buttons. A new answer replies to the
        # same question; a continuation to the answer it continues.
        self._run(answer if is_continue else answer.reply_to_message or answer, key, reply)
        with contextlib.suppress(TelegramError):
            await self._bot.edit_message_reply_markup(answer.chat.id, answer.message_id)
        return "Continuing…" if is_continue else "Regenerating…"

    async def _starting(self, start: Awaitable[Reply]) -> Reply:
        return await self._tracker.starting(start)

    def _run(self, message: Message, key: ChatKey, reply: Reply) -> None:
        if self._tracker.is_closing:
            reply.interrupt()  # started while shutting down: store and show it as interrupted
        # No await from here on: the reply is running and must be shown and landed.
        token = next(self._tokens)
        running = _Running(reply, int(key.user_id), message)
        self._running[token] = running
        show = self._show(token, running)
        running.task = self._tracker.start(reply, show, name=f"telegram {key}")

    def stop_by_button(self, data: str, user_id: int, *, is_admin: bool) -> str:
        """Handle a Stop button press; returns the text of the toast to show."""
        try:
            token = int(data.removeprefix(STOP_PREFIX))
        except ValueError:
            return NOT_MY_BUTTON
        running = self._running.get(token)
        if running is None:
            return ANSWER_ALREADY_FINISHED
        if user_id != running.user_id and not is_admin:
            return ONLY_ASKER_OR_ADMIN_STOPS
        running.reply.stop()
        return STOPPING_ANSWER

    async def close(self, *, timeout: float) -> None:
        """Cut every answer short, land its text so far with a note, then return."""
        await self._tracker.close(timeout=timeout)

    # One answer -----------------------------------------------------------------------------

    async def _show(self, token: int, running: _Running) -> None:
        message = running.message
        target = target_of(message)
        is_group = is_group_chat(message)
        stop_markup = InlineKeyboardMarkup(
            [[InlineKeyboardButton(STOP_LABEL, callback_data=f"{STOP_PREFIX}{token}")]]
        )
        use_drafts = not is_group and self._drafts.allows(target.chat_id)
        typing = asyncio.create_task(self._keep_typing(target, running.answering))
        try:
            with self._pacers.lease(target.chat_id, is_group=is_group) as pacer:
                sink = TelegramSink(
                    self._bot,
                    target,
                    draft_base=self._draft_base(token) if use_drafts else None,
                    stop_markup=stop_markup,
                    on_drafts_refused=lambda everywhere: self._drafts.refuse(
                        target.chat_id, everywhere
                    ),
                    on_first_message=lambda message_id: self._remember(
                        running, target.chat_id, message_id, "answer"
                    ),
                )
                renderer = StreamRenderer(
                    sink,
                    TelegramLayout(self._options.reasoning),
                    clock=self._clock,
                    pacer=pacer,
                    options=self._options.delivery,
                )
                control = stop_markup if use_drafts else None
                await self._render(running, renderer, pacer, control)
                await self._offer_regenerate(running, sink, pacer)
        finally:
            running.answering.set()
            typing.cancel()
            self._running.pop(token, None)
            if running.control is not None:
                await self._delete(running.control)

    async def _render(
        self,
        running: _Running,
        renderer: StreamRenderer,
        pacer: ChatPacer,
        control_markup: InlineKeyboardMarkup | None,
    ) -> None:
        if control_markup is not None:
            # Drafts carry no buttons: the Stop button sits on a small message above the
            # draft, deleted once the answer is complete. It takes the chat's first slot.
            target = target_of(running.message)
            running.control = await self._notices.send(
                ChatTarget(target.chat_id, thread_id=target.thread_id),
                CONTROL_TEXT,
                is_group=False,
                markup=control_markup,
                pacer=pacer,
            )
            if running.control is not None:  # not sent (flood control, blocked): no Stop
                self._remember(running, target.chat_id, running.control.message_id, "control")
        await render_reply(
            renderer,
            running.reply,
            _Watched(running),
            shutdown_note=SHUTDOWN_NOTE,
            name=f"reply {running.reply.key}",
        )

    async def _offer_regenerate(
        self, running: _Running, sink: TelegramSink, pacer: ChatPacer
    ) -> None:
        """🔄 (and ➡ if cut at the length limit) under the answer's last message once landed."""
        final = running.final
        if not self._options.regenerate_button or final is None or self._tracker.is_closing:
            return
        if final.status is ReplyStatus.INTERRUPTED:
            return
        key = running.reply.key
        buttons = [
            InlineKeyboardButton(
                REGENERATE_LABEL, callback_data=f"{REGENERATE_PREFIX}{key.user_id}"
            )
        ]
        if final.status is ReplyStatus.LENGTH:
            buttons.append(
                InlineKeyboardButton(
                    CONTINUE_LABEL, callback_data=f"{CONTINUE_PREFIX}{key.user_id}"
                )
            )
        markup = InlineKeyboardMarkup([buttons])
        async with pacer.turn():
            message_id = await sink.mark_last(markup)
        if message_id is not None:
            self._latest.pop(key, None)  # newest last: the oldest are forgotten first
            self._latest[key] = message_id
            if len(self._latest) > MAX_REMEMBERED:
                del self._latest[next(iter(self._latest))]

    def _remember(self, running: _Running, chat_id: int, message_id: int, kind: str) -> None:
        """Store where the answer shows (in the background): a restart after a kill edits it."""
        location = json.dumps({"chat_id": chat_id, "message_id": message_id, "kind": kind})
        task = asyncio.create_task(self._service.set_reply_location(running.reply, location))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def announce_interrupted(self, interrupted: Iterable[InterruptedReply]) -> None:
        """After a kill: say in each chat that the answer shown there was cut by a restart.

        The Stop message of a draft answer becomes the note; a sent answer loses its Stop
        button and gets the note as a reply (its text so far stays as it was shown).
        """
        for each in interrupted:
            if each.key.platform != "telegram" or not each.location:
                continue
            try:
                where = json.loads(each.location)
                chat_id, message_id = int(where["chat_id"]), int(where["message_id"])
                if where.get("kind") == "control":
                    await self._bot.edit_message_text(RESTART_NOTE, chat_id, message_id)
                else:
                    await self._bot.edit_message_reply_markup(chat_id, message_id)
                    await self._bot.send_message(
                        chat_id,
                        RESTART_NOTE,
                        reply_parameters=ReplyParameters(
                            message_id, allow_sending_without_reply=True
                        ),
                    )
            except (ValueError, KeyError, TypeError) as error:
                log.warning("an interrupted reply has a location we cannot read: %s", error)
            except TelegramError as error:  # deleted meanwhile, bot blocked, ...
                log.info("chat %s: restart note not shown: %s", each.key.chat_id, error.message)

    async def _keep_typing(self, target: ChatTarget, answering: asyncio.Event) -> None:
        """The typing action while the request is queued or the model thinks."""
        while not answering.is_set():
            try:
                await self._bot.send_chat_action(
                    target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id
                )
            except TelegramError as error:
                log.debug("chat %s: typing action failed: %s", target.chat_id, error.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answering.wait(), TYPING_EVERY)

    async def _delete(self, control: Message) -> None:
        try:
            await self._bot.delete_message(control.chat.id, control.message_id)
        except TelegramError as error:
            log.info("chat %s: Stop message not deleted: %s", control.chat.id, error.message)

    @staticmethod
    def _draft_base(token: int) -> int:
        # Distinct per answer, and per message of it (index < 100), within 31 bits.
        return (token % 20_000_000) * 100 + 1
