"""The Bot API methods that act on chats: Telegram's checks, answers and state changes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .telegram_html import EntityParseError, FormattedText, format_text, utf16_len
from .telegram_state import (
    CallbackQueryState,
    ChatAction,
    ChatMessage,
    Draft,
    FakeChat,
    message_to_api,
)

Params = dict[str, Any]
Handler = Callable[[Params], Awaitable[Any]]

MAX_TEXT_LENGTH = 4096  # UTF-16 code units after entity parsing
MAX_CALLBACK_DATA_BYTES = 64
MAX_COMMANDS = 100

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

# Form bodies carry strings (PTB JSON-encodes every non-string value); these say how to decode.
_INT_PARAMS = frozenset(
    {
        "message_id",
        "draft_id",
        "offset",
        "limit",
        "message_thread_id",
        "cache_time",
        "reply_to_message_id",
        "user_id",
        "max_connections",
    }
)
_FLOAT_PARAMS = frozenset({"timeout"})
_BOOL_PARAMS = frozenset(
    {
        "show_alert",
        "drop_pending_updates",
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
    }
)
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "entities",
        "reply_parameters",
        "link_preview_options",
        "allowed_updates",
        "commands",
        "scope",
        "caption_entities",
    }
)
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


class ApiError(Exception):
    """An error answer: {"ok": false, "error_code": status, "description": ...}."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        raw_body: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.raw_body = raw_body


class BotApiMethods:
    """Handlers of the chat-facing Bot API methods over shared chat state; errors as ApiError."""

    def __init__(
        self,
        bot_user: dict[str, Any],
        chats: dict[int, FakeChat],
        callback_queries: dict[str, CallbackQueryState],
        clock: Callable[[], float],
    ) -> None:
        self.bot_user = bot_user
        self.chats = chats
        self.callback_queries = callback_queries
        self.clock = clock
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def handlers(self) -> dict[str, Handler]:
        """Handlers by canonical method name."""
        return {
            "getMe": self._get_me,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "sendMessageDraft": self._send_message_draft,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback_query,
            "deleteMessage": self._delete_message,
            # PTB never calls these at shutdown, but a bot may; they change nothing here.
            "close": self._no_op,
            "logOut": self._no_op,
        }

    async def _no_op(self, params: Params) -> bool:
        return True

    async def _get_me(self, params: Params) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _set_my_commands(self, params: Params) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        if len(commands) > MAX_COMMANDS:
            raise ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[_commands_key(params)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: Params) -> list[dict[str, Any]]:
        return list(self.commands.get(_commands_key(params), []))

    async def _delete_my_commands(self, params: Params) -> bool:
        self.commands.pop(_commands_key(params), None)
        return True

    async def _send_message(self, params: Params) -> dict[str, Any]:
        chat = self._chat_param(params)
        formatted = _formatted(params, allow_empty=False)
        markup = _inline_markup(params.get("reply_markup"))
        reply_to = _reply_target(chat, params)
        message = ChatMessage(
            message_id=chat.next_message_id(),
            chat_id=chat.id,
            from_user=self.bot_user,
            date=int(time.time()),
            text=formatted.text,
            entities=formatted.entities,
            raw=params["text"],
            parse_mode=params.get("parse_mode"),
            reply_markup=markup,
            reply_to_message_id=reply_to,
            versions=[formatted.text],
        )
        chat.messages[message.message_id] = message
        chat.draft_cleared_at = self.clock()
        return message_to_api(chat, message)

    async def _edit_message_text(self, params: Params) -> dict[str, Any]:
        chat, message = self._editable_message(params)
        if message.text is None or message.extra:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        formatted = _formatted(params, allow_empty=False)
        # Leaving reply_markup out removes the inline keyboard, as on Telegram.
        markup = _inline_markup(params.get("reply_markup"))
        if (formatted.text, formatted.entities, markup) == (
            message.text,
            message.entities,
            message.reply_markup,
        ):
            raise ApiError(400, NOT_MODIFIED)
        message.text, message.entities = formatted.text, formatted.entities
        message.raw, message.parse_mode = params["text"], params.get("parse_mode")
        message.reply_markup = markup
        message.edit_date = int(time.time())
        message.versions.append(formatted.text)
        return message_to_api(chat, message)

    async def _edit_message_reply_markup(self, params: Params) -> dict[str, Any]:
        chat, message = self._editable_message(params)
        markup = _inline_markup(params.get("reply_markup"))
        if markup == message.reply_markup:
            raise ApiError(400, NOT_MODIFIED)
        message.reply_markup = markup
        message.edit_date = int(time.time())
        return message_to_api(chat, message)

    async def _send_message_draft(self, params: Params) -> bool:
        chat = self._chat_param(params)
        if chat.is_group:
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        draft_id = params.get("draft_id")
        if not draft_id:
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        formatted = _formatted(params, allow_empty=True)
        chat.drafts.append(
            Draft(
                at=self.clock(),
                draft_id=draft_id,
                text=formatted.text,
                raw=params.get("text", ""),
                entities=formatted.entities,
            )
        )
        return True

    async def _send_chat_action(self, params: Params) -> bool:
        chat = self._chat_param(params)
        action = params.get("action")
        if action not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        chat.actions.append(ChatAction(at=self.clock(), action=action))
        return True

    async def _answer_callback_query(self, params: Params) -> bool:
        query = self.callback_queries.get(str(params.get("callback_query_id")))
        if query is None or query.is_answered:
            raise ApiError(400, QUERY_TOO_OLD)
        keys = ("text", "show_alert", "url", "cache_time")
        query.answer = {key: params[key] for key in keys if key in params}
        return True

    async def _delete_message(self, params: Params) -> bool:
        chat = self._chat_param(params)
        message = chat.messages.get(params.get("message_id", 0))
        if message is None or message.is_deleted:
            raise ApiError(400, "Bad Request: message to delete not found")
        message.is_deleted = True
        return True

    def _chat_param(self, params: Params) -> FakeChat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str):
            # @username addresses public chats; users of private chats cannot be found so.
            raise ApiError(400, "Bad Request: chat not found")
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    def _editable_message(self, params: Params) -> tuple[FakeChat, ChatMessage]:
        if "inline_message_id" in params:
            raise ApiError(400, "Bad Request: the fake server does not support inline messages")
        chat = self._chat_param(params)
        message_id = params.get("message_id")
        if message_id is None:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None or message.is_deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.is_from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return chat, message


def decode_params(raw: dict[str, Any]) -> Params:
    """Decode form strings (PTB JSON-encodes every non-string value) to Python values."""
    return {key: _decode_param(key, value) for key, value in raw.items()}


def _decode_param(key: str, value: Any) -> Any:
    try:
        if key == "chat_id":
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                return int(value)
            return value
        if key in _INT_PARAMS:
            return int(value)
        if key in _FLOAT_PARAMS:
            return float(value)
        if key in _BOOL_PARAMS:
            if isinstance(value, str):
                return value.lower() in ("true", "1")
            return bool(value)
        if key in _JSON_PARAMS and isinstance(value, str):
            return json.loads(value)
    except ValueError:
        raise ApiError(400, f"Bad Request: can't parse parameter {key}") from None
    return value


def _formatted(params: Params, *, allow_empty: bool) -> FormattedText:
    """The visible text of a text parameter, or the ApiError Telegram would answer."""
    text = params.get("text")
    if text is None or text == "":
        if allow_empty:
            return FormattedText("")
        raise ApiError(400, "Bad Request: message text is empty")
    try:
        formatted = format_text(str(text), params.get("parse_mode"), params.get("entities"))
    except EntityParseError as error:
        raise ApiError(400, f"Bad Request: can't parse entities: {error}") from None
    except ValueError as error:
        raise ApiError(400, f"Bad Request: {error}") from None
    if not formatted.text and not allow_empty:
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(formatted.text) > MAX_TEXT_LENGTH:
        raise ApiError(400, "Bad Request: message is too long")
    return formatted


def _inline_markup(markup: Any) -> dict[str, Any] | None:
    """The inline keyboard a message keeps (others are not part of the message), validated."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return None  # reply keyboards, ReplyKeyboardRemove, ForceReply: not shown on the message
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, "Bad Request: can't parse inline keyboard")
    for button in (button for row in rows for button in row):
        if not isinstance(button, dict) or not isinstance(button.get("text"), str):
            raise ApiError(
                400,
                'Bad Request: can\'t parse inline keyboard button: Field "text" must be of '
                "type String",
            )
        if "callback_data" in button:
            if not 1 <= len(str(button["callback_data"]).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        elif len(button) == 1:
            raise ApiError(
                400,
                "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in "
                "the inline keyboard",
            )
    return markup if any(rows) else None


def _reply_target(chat: FakeChat, params: Params) -> int | None:
    reply = params.get("reply_parameters") or {}
    message_id = reply.get("message_id", params.get("reply_to_message_id"))
    if message_id is None:
        return None
    target = chat.messages.get(message_id)
    if target is None or target.is_deleted:
        if reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply"):
            return None
        raise ApiError(400, "Bad Request: message to be replied not found")
    return message_id


def _commands_key(params: Params) -> tuple[str, str]:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), params.get("language_code") or ""
