"""What the fake Telegram server remembers: calls, chats, messages, drafts, callback queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ChatType = Literal["private", "group", "supergroup"]


@dataclass
class Call:
    """One HTTP call to the Bot API as the fake server saw and answered it."""

    at: float  # the server's clock (time.monotonic unless injected) when the call arrived
    method: str  # canonical Bot API name, e.g. "sendMessage"
    chat_id: int | str | None
    params: dict[str, Any]  # decoded: ints, bools and JSON objects, not form strings
    status: int | None = None  # HTTP status of the answer; None while still in progress
    description: str | None = None  # error description when status != 200
    result: Any = None
    finished_at: float | None = None

    @property
    def is_ok(self) -> bool:
        """Whether the call was answered with 200 OK."""
        return self.status == 200


@dataclass
class Draft:
    """One sendMessageDraft the user saw."""

    at: float
    draft_id: int
    text: str  # visible text ("" shows Telegram's "Thinking..." placeholder)
    raw: str  # the text parameter as sent (HTML source when parse_mode=HTML)
    entities: tuple[dict[str, Any], ...] = ()


@dataclass
class ChatAction:
    """One sendChatAction."""

    at: float
    action: str


@dataclass
class ChatMessage:
    """A message in a chat, from the bot or a user, as it currently shows."""

    message_id: int
    chat_id: int
    from_user: dict[str, Any]
    date: int
    text: str | None  # visible text; None for media without caption
    entities: tuple[dict[str, Any], ...] = ()
    raw: str | None = None  # the bot's text parameter (HTML source with parse_mode=HTML)
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None  # inline keyboard only, as Telegram keeps it
    reply_to_message_id: int | None = None
    edit_date: int | None = None
    is_deleted: bool = False
    versions: list[str] = field(default_factory=list)  # visible text after send and each edit
    extra: dict[str, Any] = field(default_factory=dict)  # other Message fields (sticker, photo)

    @property
    def is_from_bot(self) -> bool:
        """Whether the bot sent this message."""
        return bool(self.from_user.get("is_bot"))

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]


@dataclass
class FakeChat:
    """A chat the bot can talk to, with everything the bot did in it."""

    id: int
    type: ChatType
    title: str | None = None
    user: dict[str, Any] | None = None  # the other side of a private chat
    messages: dict[int, ChatMessage] = field(default_factory=dict)
    drafts: list[Draft] = field(default_factory=list)
    actions: list[ChatAction] = field(default_factory=list)
    last_message_id: int = 0
    draft_cleared_at: float | None = None  # when the bot last sent a message (it ends a draft)

    @property
    def is_group(self) -> bool:
        """Whether this is a group or supergroup."""
        return self.type != "private"

    @property
    def bot_messages(self) -> list[ChatMessage]:
        """Messages the bot sent here and has not deleted, oldest first."""
        return [m for m in self.messages.values() if m.is_from_bot and not m.is_deleted]

    @property
    def texts(self) -> list[str]:
        """The visible text of each message the bot has here now, oldest first."""
        return [m.text or "" for m in self.bot_messages]

    @property
    def last_bot_message(self) -> ChatMessage | None:
        """The newest message the bot has here, if any."""
        messages = self.bot_messages
        return messages[-1] if messages else None

    def current_draft(self, now: float, lifetime: float = 30.0) -> Draft | None:
        """The draft the user sees now: the latest one, unless a message or time ended it."""
        if not self.drafts:
            return None
        draft = self.drafts[-1]
        if self.draft_cleared_at is not None and self.draft_cleared_at >= draft.at:
            return None
        return draft if now - draft.at < lifetime else None

    def next_message_id(self) -> int:
        """Allocate the next message id of this chat."""
        self.last_message_id += 1
        return self.last_message_id

    def to_api(self) -> dict[str, Any]:
        """The Bot API Chat object."""
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            chat["first_name"] = self.user["first_name"]
            if "username" in self.user:
                chat["username"] = self.user["username"]
        else:
            chat["title"] = self.title
        return chat


@dataclass
class CallbackQueryState:
    """A button press and the bot's answer to it."""

    id: str
    chat_id: int
    message_id: int
    data: str
    from_user: dict[str, Any]
    answer: dict[str, Any] | None = None  # answerCallbackQuery params once answered

    @property
    def is_answered(self) -> bool:
        """Whether the bot has answered the query."""
        return self.answer is not None


def message_to_api(chat: FakeChat, message: ChatMessage, *, with_reply: bool = True) -> dict:
    """The Bot API Message object for a message as it shows now."""
    result: dict[str, Any] = {
        "message_id": message.message_id,
        "from": message.from_user,
        "chat": chat.to_api(),
        "date": message.date,
    }
    if message.text is not None:
        key = "caption" if message.extra else "text"
        result[key] = message.text
        if message.entities:
            result["caption_entities" if message.extra else "entities"] = list(message.entities)
    result.update(message.extra)
    if message.edit_date is not None:
        result["edit_date"] = message.edit_date
    if message.reply_markup is not None:
        result["reply_markup"] = message.reply_markup
    replied = chat.messages.get(message.reply_to_message_id or 0)
    if with_reply and replied is not None:
        # Telegram nests the replied-to message one level deep only.
        result["reply_to_message"] = message_to_api(chat, replied, with_reply=False)
    return result
