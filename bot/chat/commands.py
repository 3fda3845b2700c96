"""The bot's commands, platform-neutral: who may run each one, and every line they answer with.

Telegram, Discord and the console read the same table: Telegram's command menu, Discord's slash
command descriptions and every /help text are built from it, and each front-end asks
`Rule.allows` before running a command. One rule per command, the same on every platform:

- anyone: `/id` (how someone not yet allowed asks to be let in);
- users (whoever the allowlists let in): `/ask`, `/chat`, `/stop`, `/reset` (their own dialogue),
  `/help`, `/start`;
- admins: `/system` (showing it too), `/reset` of someone else's dialogue, `/reload`, `/stats`.

Admins are the bot's configured `admins`. On Discord a member with Manage Server is an admin of
their own server's channels too, but not of commands that reach the whole bot (`/reload`,
`/stats`) and never in a DM. The console's user runs the bot and is its admin.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Platform = Literal["telegram", "discord", "console"]
EVERYWHERE: frozenset[Platform] = frozenset({"telegram", "discord", "console"})
CHATS: frozenset[Platform] = frozenset({"telegram", "discord"})


class Role(enum.Enum):
    """Who may run a command."""

    ANYONE = "anyone"  # even someone the allowlists keep out
    USER = "user"  # whoever the allowlists let in (admins always are)
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Standing:
    """What a front-end knows about the person running a command, where they run it."""

    is_allowed: bool  # the allowlists let them in here
    is_admin: bool  # one of the bot's configured admins
    manages_place: bool = False  # Discord: Manage Server in the server the command came from


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may run something; `is_bot_wide`: it reaches every chat, so only configured admins."""

    role: Role
    is_bot_wide: bool = False

    def allows(self, standing: Standing) -> bool:
        if self.role is Role.ANYONE or standing.is_admin:
            return True
        if self.role is Role.USER:
            return standing.is_allowed
        return standing.is_allowed and standing.manages_place and not self.is_bot_wide


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its rule, its one-line summary, and how /help shows it on each platform."""

    name: str
    summary: str  # Telegram's menu and Discord's slash description ("(admins)" is added)
    rule: Rule
    platforms: frozenset[Platform] = EVERYWHERE
    arguments: Mapping[Platform, str] = field(default_factory=dict)  # as typed there, for /help
    admin_forms: Mapping[Platform, str] = field(default_factory=dict)  # its admins' forms
    in_menu: bool = True  # Telegram shows its menu to everyone: bot-wide commands stay out

    def describe(self, platform: Platform) -> str:
        """The summary with who may run it, as a menu or a slash command shows it."""
        if self.rule.role is Role.ADMIN and platform != "console":
            return f"{self.summary} (admins)"
        return self.summary


USER = Rule(Role.USER)
ADMIN = Rule(Role.ADMIN)
# Resetting someone else's dialogue (or everyone's in a group) is an admin's action.
RESET_OTHERS = ADMIN

COMMANDS: tuple[Command, ...] = (
    Command("ask", "Ask a question (in groups)", USER, frozenset({"telegram"}),
            {"telegram": " <question>"}),
    Command("chat", "Ask the model, optionally about a text file", USER,
            frozenset({"discord"}), {"discord": " prompt: [file:]"}),
    Command("stop", "Stop the answer being written", USER, CHATS),
    Command("reset", "Start a new conversation", USER, admin_forms={
        "telegram": "/reset <user id> or /reset all: someone else's or everyone's here (admins)",
        "discord": "/reset user: someone else's here (admins)",
    }),
    Command("system", "Show or set this chat's system prompt", ADMIN,
            arguments={"telegram": " [text|clear]", "discord": " [text:]",
                       "console": " [TEXT|clear]"}),
    Command("id", "Show your user id and this chat's id", Rule(Role.ANYONE), CHATS),
    Command("stats", "The bot's figures: replies, tokens, timings", Rule(Role.ADMIN, True),
            in_menu=False),
    Command("reload", "Re-read the bot's config file", Rule(Role.ADMIN, True), in_menu=False),
    Command("help", "What this bot can do", USER),
    Command("start", "Say hello", USER, frozenset({"telegram"})),
    Command("exit", "Quit (or Ctrl-D)", USER, frozenset({"console"})),
)  # fmt: skip
BY_NAME: Mapping[str, Command] = {command.name: command for command in COMMANDS}


def commands_for(platform: Platform) -> tuple[Command, ...]:
    return tuple(command for command in COMMANDS if platform in command.platforms)


# Wording that is the same everywhere ----------------------------------------------------------

NOT_ALLOWED = "Sorry, this bot is private: you (or this chat) are not on its allowlist."
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
ADMINS_ONLY_RELOAD = "Only the bot's admins can reload its config."
ADMINS_ONLY_STATS = "Only the bot's admins can see its statistics."
NO_STATS = "Statistics are not collected in this bot."
NOT_RELOADABLE = "This bot was not started from a config file: nothing to reload."
RESET_DONE = "🧹 New conversation: I have forgotten our earlier messages."
RESET_USAGE = "Usage: /reset (your conversation), /reset <user id> or /reset all (admins)."
RESET_ALL_IN_GROUPS = "/reset all works in groups; here /reset resets ours."
ASK_USAGE = "Usage: /ask <your question>"
SYSTEM_CLEARED = "System prompt restored to the default."
STOPPING = "Stopping your answer."
NOTHING_TO_STOP = "There is no answer to stop."


# The Stop button under a streaming answer, on both platforms.
ONLY_ASKER_OR_ADMIN_STOPS = "Only the person who asked (or an admin) can stop this answer."
ANSWER_ALREADY_FINISHED = "This answer has already finished."
STOPPING_ANSWER = "Stopping…"
NOT_MY_BUTTON = "That button is not mine."


# The 🔄 (regenerate) and ➡ (continue) buttons under an answer, on both platforms.
def only_the_asker_can(verb: str) -> str:
    return f"Only the person who asked can {verb} this answer."


def only_the_latest_can_be(verb: str) -> str:
    return f"Only the latest answer can be {verb}d."


CLEAR_WORDS = frozenset({"clear", "default", "reset"})  # `/system clear` restores the default

_INTRO: Mapping[Platform, str] = {
    "telegram": (
        "• In a private chat, just write to me.\n"
        "• In a group, mention me, reply to one of my messages, or use /ask <question>.\n"
    ),
    "discord": (
        "• In a DM, just write to me.\n"
        "• In a server, @mention me or use /chat.\n"
        "• Each person has their own conversation in each channel.\n"
    ),
}
_TIPS = (
    "• Reply to a message to ask about it; send a text file (.txt, .md, .csv, code) to have "
    "me read it.\n"
    "• 🔄 under my latest answer writes another; ➡ Continue goes on with one cut short.\n"
    "• ⏹ Stop under an answer stops it, as /stop does.\n"
)


def is_clear(text: str) -> bool:
    """Whether `/system <text>` asks for the default back."""
    return text.strip().lower() in CLEAR_WORDS


def clipped(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` (an ellipsis marks the cut)."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


@dataclass(frozen=True, slots=True)
class Wording:
    """Every line a platform's commands answer with; `place` is what the platform calls a chat."""

    platform: Platform
    place: str
    admins: str  # who counts as an admin there, as a refusal names them

    def help_text(self) -> str:
        """/help: how to ask, then every command of the platform with its arguments."""
        lines = []
        for command in commands_for(self.platform):
            lines.append(_help_line(self.platform, command))
            if self.platform in command.admin_forms:
                lines.append(f"  {command.admin_forms[self.platform]}")
        if self.platform == "console":
            return (
                "Commands:\n" + "\n".join(lines) + "\n"
                "Ctrl-C stops the answer being written; Ctrl-D stops it and quits."
            )
        return (
            "I answer with DeepSeek-R1, a reasoning model: I think first, then answer.\n"
            + _INTRO[self.platform]
            + _TIPS
            + "\n"
            + "\n".join(lines)
        )

    def start_text(self) -> str:
        return "Hi! " + self.help_text()

    def admins_only(self, command: str) -> str:
        """The refusal of an admins' command (`reset`: of someone else's) to someone else."""
        if command == "system":
            return f"Only {self.admins} can view or change the system prompt."
        if command == "reset":
            return f"Only {self.admins} can reset someone else's conversation."
        return {"reload": ADMINS_ONLY_RELOAD, "stats": ADMINS_ONLY_STATS}[command]

    def reset_other_done(self, who: str) -> str:
        return f"🧹 Reset the conversation of {who}."

    def reset_all_done(self, count: int) -> str:
        return f"🧹 New conversations for everyone here ({count} reset)."

    def system_shown(self, shown: str, *, is_custom: bool) -> str:
        """`shown`: the prompt as the platform quotes it ('' for an empty one)."""
        origin = f"set for this {self.place}" if is_custom else "the default"
        return f"System prompt ({origin}):\n\n{shown or '(empty)'}"

    def system_set(self) -> str:
        return f"System prompt set for this {self.place}. /reset to start afresh with it."

    def ids_text(self, user_id: int, chat_id: int | None, server_id: int | None = None) -> str:
        """The ids an admin needs for the allowlists."""
        lines = [f"Your user id: {user_id}", f"This {self.place}'s id: {chat_id}"]
        if server_id is not None:
            lines.append(f"This server's id: {server_id}")
        return "\n".join(lines)


def _help_line(platform: Platform, command: Command) -> str:
    usage = f"/{command.name}{command.arguments.get(platform, '')}"
    what = command.describe(platform)
    if platform == "console":
        return f"  {usage:<22}{what[0].lower()}{what[1:]}"
    return f"{usage} — {what[0].lower()}{what[1:]}"


TELEGRAM = Wording("telegram", place="chat", admins="the bot's admins")
DISCORD = Wording("discord", place="channel", admins="admins (or members with Manage Server)")
CONSOLE = Wording("console", place="chat", admins="the bot's admins")
