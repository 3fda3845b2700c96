"""Telegram's commands: /start /help /reset /system /stop /ask /id /stats /reload, unknown ones.

Who may run each one and what it answers come from bot.chat.commands; this module only turns
Telegram messages into those calls.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from telegram import BotCommand, Message, Update, User
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.chat.commands import (
    ASK_USAGE,
    NO_STATS,
    NOT_ALLOWED,
    NOT_RELOADABLE,
    NOTHING_TO_STOP,
    RESET_ALL_IN_GROUPS,
    RESET_DONE,
    RESET_OTHERS,
    RESET_USAGE,
    SYSTEM_CLEARED,
    TELEGRAM,
    UNKNOWN_COMMAND,
    Command,
    Role,
    clipped,
    commands_for,
    is_clear,
)
from bot.chat.service import ChatService
from bot.chat.turn import NOT_SUPPORTED
from bot.frontends.telegram_ui.access import Access
from bot.frontends.telegram_ui.messages import (
    PLATFORM,
    BotIdentity,
    TurnReader,
    argument_text,
    group_turn_text,
    is_group_chat,
    key_of,
    target_of,
)
from bot.frontends.telegram_ui.notices import Notices
from bot.frontends.telegram_ui.replies import ReplyRunner
from bot.metrics import Metrics, format_stats
from bot.types import ChatError, ChatKey

if TYPE_CHECKING:
    from bot.reload import Reloader

log = logging.getLogger(__name__)

MAX_SHOWN = 3500  # of a system prompt in /system (a message holds 4096)

CommandFn = Callable[[Message, User, Sequence[str]], Awaitable[None]]
UpdateFn = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


def bot_commands(*, for_groups: bool) -> list[BotCommand]:
    """For set_my_commands (Telegram's command menu); /ask only where it is needed."""
    return [
        BotCommand(command.name, command.describe("telegram"))
        for command in commands_for("telegram")
        if command.in_menu and (for_groups or command.name != "ask")
    ]


class Commands:
    """Answers commands and the messages that ask the bot something (text, files, the rest)."""

    def __init__(
        self,
        service: ChatService,
        access: Access,
        notices: Notices,
        replies: ReplyRunner,
        turns: TurnReader,
        *,
        identity: Callable[[], BotIdentity],
        metrics: Metrics | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._service = service
        self._access = access
        self._notices = notices
        self._replies = replies
        self._turns = turns
        self._identity = identity
        self._metrics = metrics
        self._reloader = reloader

    def add_to(self, app: Application) -> None:
        """A handler for each command, one for every other command, then the plain messages."""
        new_message = filters.UpdateType.MESSAGE
        handlers: dict[str, CommandFn] = {
            "start": self.start,
            "help": self.help,
            "reset": self.reset,
            "system": self.system,
            "stop": self.stop,
            "ask": self.ask,
            "id": self.id,
            "stats": self.stats,
            "reload": self.reload,
        }
        for command in commands_for("telegram"):
            checked = self._checked(command, handlers[command.name])
            app.add_handler(CommandHandler(command.name, checked, filters=new_message))
        app.add_handler(MessageHandler(new_message & filters.COMMAND, self._on_unknown))
        text = new_message & filters.TEXT & ~filters.COMMAND
        app.add_handler(MessageHandler(text, self._on_text))
        app.add_handler(MessageHandler(new_message & filters.Document.ALL, self._on_text))
        not_text = new_message & ~filters.TEXT & ~filters.StatusUpdate.ALL
        app.add_handler(MessageHandler(not_text, self._on_not_text))

    def _checked(self, command: Command, handler: CommandFn) -> UpdateFn:
        """`handler`, run only for whom the command's rule allows; the others get the refusal."""

        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message, user = update.message, update.effective_user
            if message is None or user is None or user.is_bot:
                return
            standing = self._access.standing(user.id, message.chat.id)
            if command.rule.role is not Role.ANYONE and not standing.is_allowed:
                await self.refuse(message)
            elif not command.rule.allows(standing):
                await self.say(message, TELEGRAM.admins_only(command.name))
            else:
                await handler(message, user, context.args or [])

        return run

    async def say(self, message: Message, text: str) -> None:
        """A short answer to `message`, paced with the chat's other messages."""
        await self._notices.send(target_of(message), text, is_group=is_group_chat(message))

    async def refuse(self, message: Message) -> None:
        """One line in a private chat; nothing in a group (a refusal there is only noise)."""
        if not is_group_chat(message):
            await self.say(message, NOT_ALLOWED)

    async def _on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.text is None:
            return
        if is_group_chat(message) and not self._identity().is_command_for_me(message):
            return  # another bot's command
        await self.say(message, UNKNOWN_COMMAND)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message, or a file with or without a caption."""
        message, user = update.message, update.effective_user
        if message is None or user is None or user.is_bot:
            return
        if not is_group_chat(message):
            text: str | None = message.text or message.caption or ""
        else:
            text = group_turn_text(message, self._identity())
            if text is None:
                return  # group chatter not meant for the bot
        if not self._access.is_allowed(user.id, message.chat.id):
            await self.refuse(message)
            return
        await self.answer(message, user, text)

    async def _on_not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.message, update.effective_user
        if message is None or user is None or user.is_bot:
            return
        if is_group_chat(message) and not self._identity().is_addressed(message):
            return
        if not self._access.is_allowed(user.id, message.chat.id):
            await self.refuse(message)
            return
        await self.say(message, NOT_SUPPORTED)

    async def start(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self.say(message, TELEGRAM.start_text())

    async def help(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self.say(message, TELEGRAM.help_text())

    async def id(self, message: Message, user: User, args: Sequence[str]) -> None:
        # Open to everyone: someone not yet allowed needs it to ask an admin to add them.
        await self.say(message, TELEGRAM.ids_text(user.id, message.chat.id))

    async def ask(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self.answer(message, user, argument_text(message))

    async def answer(self, message: Message, user: User, text: str) -> None:
        """Answer `text` with what the message brings (a replied-to message, a file)."""
        if not text and message.reply_to_message is None and message.document is None:
            await self.say(message, ASK_USAGE)
            return
        try:
            turn = await self._turns.turn(message, user, text)
        except ChatError as error:
            await self.say(message, str(error))
            return
        await self._replies.begin(message, key_of(message, user), turn)

    async def stop(self, message: Message, user: User, args: Sequence[str]) -> None:
        # The answer itself then shows "Stopped": no second message needed.
        if not self._service.stop(key_of(message, user)):
            await self.say(message, NOTHING_TO_STOP)

    async def reset(self, message: Message, user: User, args: Sequence[str]) -> None:
        if not args:
            await self._service.reset(key_of(message, user))
            await self.say(message, RESET_DONE)
            return
        if not RESET_OTHERS.allows(self._access.standing(user.id, message.chat.id)):
            await self.say(message, TELEGRAM.admins_only("reset"))
            return
        _audit(user, message, "/reset " + " ".join(args))
        if len(args) != 1:
            await self.say(message, RESET_USAGE)
            return
        if args[0].lower() == "all":
            if not is_group_chat(message):
                await self.say(message, RESET_ALL_IN_GROUPS)
                return
            count = await self._service.reset_chat(PLATFORM, str(message.chat.id))
            await self.say(message, TELEGRAM.reset_all_done(count))
            return
        try:
            target_user = int(args[0])
        except ValueError:
            await self.say(message, RESET_USAGE)
            return
        # In a private chat the other user's dialogue is in their own private chat (id = user id).
        chat_id = message.chat.id if is_group_chat(message) else target_user
        await self._service.reset(ChatKey(PLATFORM, str(chat_id), str(target_user)))
        await self.say(message, TELEGRAM.reset_other_done(f"user {target_user}"))

    async def reload(self, message: Message, user: User, args: Sequence[str]) -> None:
        """Re-read the config file: allowlists, limits, ... apply at once."""
        if self._reloader is None:
            await self.say(message, NOT_RELOADABLE)
            return
        _audit(user, message, "/reload")
        result = await self._reloader.reload()
        await self.say(message, result.summary())

    async def stats(self, message: Message, user: User, args: Sequence[str]) -> None:
        """The figures /metrics serves, as text."""
        if self._metrics is None:
            await self.say(message, NO_STATS)
        else:
            await self.say(message, format_stats(self._metrics.snapshot()))

    async def system(self, message: Message, user: User, args: Sequence[str]) -> None:
        chat_id = str(message.chat.id)
        text = argument_text(message)
        action = "show" if not text else "clear" if is_clear(text) else "set"
        _audit(user, message, f"/system ({action})")
        if action == "show":
            current = await self._service.system_prompt(PLATFORM, chat_id)
            shown = clipped(current.text, MAX_SHOWN)
            await self.say(message, TELEGRAM.system_shown(shown, is_custom=current.is_custom))
            return
        if action == "clear":
            await self._service.set_system_prompt(PLATFORM, chat_id, None)
            await self.say(message, SYSTEM_CLEARED)
            return
        try:
            await self._service.set_system_prompt(PLATFORM, chat_id, text)
        except ChatError as error:
            await self.say(message, str(error))
            return
        await self.say(message, TELEGRAM.system_set())


def _audit(user: User, message: Message, command: str) -> None:
    """One line for every admin action (the admin check passed): who, what, where."""
    log.info("audit: admin %d ran %s in chat %d", user.id, command.strip(), message.chat.id)
