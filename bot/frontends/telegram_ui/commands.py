"""The bot's slash commands: /start /help /reset /system /stop /ask /id (and unknown ones)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from telegram import BotCommand, Message, User

from bot.chat.service import ChatService
from bot.chat.turn import NOT_SUPPORTED
from bot.frontends.telegram_ui.access import Access
from bot.frontends.telegram_ui.notices import Notices
from bot.frontends.telegram_ui.replies import ReplyRunner, is_group_chat, target_of
from bot.frontends.telegram_ui.turns import TurnReader
from bot.types import ChatError, ChatKey

if TYPE_CHECKING:
    from bot.reload import Reloader

log = logging.getLogger(__name__)

PLATFORM = "telegram"

COMMANDS: tuple[tuple[str, str], ...] = (
    ("ask", "Ask a question (in groups)"),
    ("stop", "Stop the answer being written"),
    ("reset", "Start a new conversation"),
    ("system", "Show or set this chat's system prompt (admins)"),
    ("id", "Show your user id and this chat's id"),
    ("help", "What this bot can do"),
    ("start", "Say hello"),
)

HELP = (
    "I answer with DeepSeek-R1, a reasoning model: I think first, then answer.\n"
    "• In a private chat, just write to me.\n"
    "• In a group, mention me, reply to one of my messages, or use /ask <question>.\n"
    "• Reply to a message to ask about it; send a text file (.txt, .md, .csv, code) to have "
    "me read it.\n"
    "• 🔄 under my latest answer writes another; ➡ Continue goes on with one cut short.\n\n"
    "/stop stops the answer being written (or press ⏹ Stop)\n"
    "/reset starts a new conversation (I forget the earlier messages)\n"
    "/system shows or sets this chat's system prompt (admins)\n"
    "/id shows your user id and this chat's id (for the bot's allowlist)\n"
    "/reload re-reads the bot's config (admins)\n"
    "/help shows this message"
)
START = "Hi! " + HELP
NOT_ALLOWED = "Sorry, this bot is private: you (or this chat) are not on its allowlist."
NOT_TEXT = NOT_SUPPORTED
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
ADMINS_ONLY_SYSTEM = "Only the bot's admins can view or change the system prompt."
ADMINS_ONLY_RELOAD = "Only the bot's admins can reload its config."
ADMINS_ONLY_RESET = "Only the bot's admins can reset someone else's conversation."
ASK_USAGE = "Usage: /ask <your question>"
RESET_USAGE = "Usage: /reset (your conversation), /reset <user id> or /reset all (admins)."
NOTHING_TO_STOP = "There is no answer to stop."
MAX_SHOWN = 3500  # of a system prompt in /system (a message holds 4096)


def key_of(message: Message, user: User) -> ChatKey:
    """Each user has their own dialogue in each chat (groups too)."""
    return ChatKey(platform=PLATFORM, chat_id=str(message.chat.id), user_id=str(user.id))


def bot_commands(*, for_groups: bool) -> list[BotCommand]:
    """For set_my_commands (Telegram's command menu); /ask only where it is needed."""
    return [
        BotCommand(name, description)
        for name, description in COMMANDS
        if for_groups or name != "ask"
    ]


class Commands:
    """Answers commands; every handler takes the message, its sender and the argument text."""

    def __init__(
        self,
        service: ChatService,
        access: Access,
        notices: Notices,
        replies: ReplyRunner,
        turns: TurnReader,
        *,
        reloader: Reloader | None = None,
    ) -> None:
        self._service = service
        self._access = access
        self._notices = notices
        self._replies = replies
        self._turns = turns
        self._reloader = reloader

    def handlers(self) -> dict[str, Callable[[Message, User, Sequence[str]], Awaitable[None]]]:
        """Command name -> handler."""
        return {
            "start": self.start,
            "help": self.help,
            "reset": self.reset,
            "system": self.system,
            "stop": self.stop,
            "ask": self.ask,
            "id": self.id,
            "reload": self.reload,
        }

    async def say(self, message: Message, text: str) -> None:
        """A short answer to `message`, paced with the chat's other messages."""
        await self._notices.send(target_of(message), text, is_group=is_group_chat(message))

    async def start(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self._greet(message, user, START)

    async def help(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self._greet(message, user, HELP)

    async def _greet(self, message: Message, user: User, text: str) -> None:
        """`text`, or the refusal: one line in a private chat, nothing in a group."""
        if self._access.is_allowed(user.id, message.chat.id):
            await self.say(message, text)
        elif not is_group_chat(message):
            await self.say(message, NOT_ALLOWED)

    async def id(self, message: Message, user: User, args: Sequence[str]) -> None:
        # Open to everyone: someone not yet allowed needs it to ask an admin to add them.
        await self.say(message, f"Your user id: {user.id}\nThis chat's id: {message.chat.id}")

    async def ask(self, message: Message, user: User, args: Sequence[str]) -> None:
        await self.answer(message, user, _argument_text(message))

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
            await self.say(message, "🧹 New conversation: I have forgotten our earlier messages.")
            return
        if not self._access.is_admin(user.id):
            await self.say(message, ADMINS_ONLY_RESET)
            return
        _audit(user, message, "/reset " + " ".join(args))
        if len(args) != 1:
            await self.say(message, RESET_USAGE)
            return
        if args[0].lower() == "all":
            if not is_group_chat(message):
                await self.say(message, "/reset all works in groups; here /reset resets ours.")
                return
            count = await self._service.reset_chat(PLATFORM, str(message.chat.id))
            await self.say(message, f"🧹 New conversations for everyone here ({count} reset).")
            return
        try:
            target_user = int(args[0])
        except ValueError:
            await self.say(message, RESET_USAGE)
            return
        # In a private chat the other user's dialogue is in their own private chat (id = user id).
        chat_id = message.chat.id if is_group_chat(message) else target_user
        await self._service.reset(ChatKey(PLATFORM, str(chat_id), str(target_user)))
        await self.say(message, f"🧹 Reset the conversation of user {target_user}.")

    async def reload(self, message: Message, user: User, args: Sequence[str]) -> None:
        """Re-read the config file (admins): allowlists, limits, ... apply at once."""
        if not self._access.is_admin(user.id):
            await self.say(message, ADMINS_ONLY_RELOAD)
            return
        if self._reloader is None:
            await self.say(
                message, "This bot was not started from a config file: nothing to reload."
            )
            return
        _audit(user, message, "/reload")
        result = await self._reloader.reload()
        await self.say(message, result.summary())

    async def system(self, message: Message, user: User, args: Sequence[str]) -> None:
        if not self._access.is_admin(user.id):
            await self.say(message, ADMINS_ONLY_SYSTEM)
            return
        chat_id = str(message.chat.id)
        text = _argument_text(message)
        action = "show" if not text else "clear" if text.lower() == "clear" else "set"
        _audit(user, message, f"/system ({action})")
        if not text:
            current = await self._service.system_prompt(PLATFORM, chat_id)
            origin = "set for this chat" if current.is_custom else "the default"
            shown = current.text or "(empty)"
            if len(shown) > MAX_SHOWN:
                shown = shown[: MAX_SHOWN - 1] + "…"
            await self.say(message, f"System prompt ({origin}):\n\n{shown}")
            return
        if text.lower() == "clear":
            await self._service.set_system_prompt(PLATFORM, chat_id, None)
            await self.say(message, "System prompt restored to the default.")
            return
        try:
            await self._service.set_system_prompt(PLATFORM, chat_id, text)
        except ChatError as error:
            await self.say(message, str(error))
            return
        await self.say(message, "System prompt set for this chat. /reset to start afresh with it.")


def _audit(user: User, message: Message, command: str) -> None:
    """One line for every admin action (the admin check passed): who, what, where."""
    log.info("audit: admin %d ran %s in chat %d", user.id, command.strip(), message.chat.id)


def _argument_text(message: Message) -> str:
    """Everything after the command word, line breaks kept (context.args loses them)."""
    text = message.text or ""
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""
