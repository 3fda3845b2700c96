"""A loopback fake of the Telegram Bot API server: real HTTP and long polling, recorded state.

Usage::

    async with FakeTelegram() as tg:
        app = Application.builder().token(tg.token).base_url(tg.base_url).build()
        tg.push_text(42, "hello")                      # a user writes to the bot
        await tg.wait_for(lambda: tg.chat(42).texts)   # until the bot has answered

A bot on a webhook (setWebhook) gets its updates POSTed instead: ``await
tg.push_webhook_update(42, "hello")``; getUpdates is refused meanwhile, as on Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiohttp
from aiohttp import web

from .telegram_faults import ANY_METHOD, Fault, FaultQueue, FloodControl, FloodLimits
from .telegram_html import utf16_len
from .telegram_methods import ApiError, BotApiMethods, Handler, Params, decode_params
from .telegram_state import (
    Call,
    CallbackQueryState,
    ChatMessage,
    ChatType,
    Draft,
    FakeChat,
    message_to_api,
)
from .telegram_webhook import (
    TERMINATED_BY_SET_WEBHOOK,
    WEBHOOK_ACTIVE,
    Secret,
    SecretChoice,
    Webhook,
    WebhookDelivery,
    no_webhook_info,
    post_update,
    record_outcome,
    webhook_from_params,
)

__all__ = ["ANY_METHOD", "DEFAULT_TOKEN", "FakeTelegram", "FloodLimits", "Secret"]

T = TypeVar("T")

DEFAULT_TOKEN = "123456789:AAFakeTokenForTestsOnly0123456789ab"
DEFAULT_GROUP_USER_ID = 1001
GET_UPDATES_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile refuses larger files ("file is too big")
DRAFT_LIFETIME_S = 30.0  # a draft shows for this long unless refreshed or replaced
_TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]{35}")


class FakeTelegram:
    """The Bot API on 127.0.0.1 for one bot, with helpers to inject updates and faults."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "fake_test_bot",
        bot_first_name: str = "Fake Bot",
        clock: Callable[[], float] = time.monotonic,
        first_update_id: int = 1000,
    ) -> None:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError("token must look like a Telegram bot token: <digits>:<35 chars>")
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":")[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.clock = clock
        self.calls: list[Call] = []
        self.chats: dict[int, FakeChat] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []  # every update ever pushed
        self.callback_queries: dict[str, CallbackQueryState] = {}
        self.num_waiting_polls = 0  # getUpdates requests being held right now
        self.webhook: Webhook | None = None  # set by setWebhook, removed by deleteWebhook
        self.webhook_deliveries: list[WebhookDelivery] = []  # every POST to a webhook
        self._webhook_session: aiohttp.ClientSession | None = None
        self._pending: list[dict[str, Any]] = []  # updates not yet confirmed by an offset
        self._update_ids = itertools.count(first_update_id)
        self._query_ids = itertools.count(4_382_000_000_000_001)
        self._file_ids = itertools.count(1)
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self.downloads: list[str] = []  # file paths the bot downloaded
        self._faults = FaultQueue()
        self._flood: FloodControl | None = None
        self._changed = asyncio.Event()
        self._new_updates = asyncio.Event()
        self._poll_generation = 0
        self._is_closing = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.methods = BotApiMethods(self.bot_user, self.chats, self.callback_queries, clock)
        handlers: dict[str, Handler] = {
            **self.methods.handlers(),
            "getUpdates": self._get_updates,
            "getFile": self._get_file,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
        }
        # Telegram matches method names case-insensitively.
        self._handlers = {name.lower(): (name, handler) for name, handler in handlers.items()}

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._handle_file)
        # handler_cancellation: a client that gives up a long poll must not leave it waiting here.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        """Answer held long polls and stop listening."""
        self._is_closing = True
        self._wake_pollers()
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """For Application.builder().base_url(...): PTB appends the token."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For Application.builder().base_file_url(...)."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    @property
    def bot_username(self) -> str:
        """The bot's @username without the @."""
        return self.bot_user["username"]

    @property
    def commands(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """setMyCommands state by (JSON scope, language_code)."""
        return self.methods.commands

    # ----------------------------------------------------------------- chats and users

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Register (or return) a human user; returns the Bot API User object."""
        if user_id in self.users:
            return self.users[user_id]
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name or f"User{user_id}",
            "language_code": language_code,
        }
        if username:
            user["username"] = username
        self.users[user_id] = user
        return user

    def add_chat(
        self, chat_id: int, *, chat_type: ChatType | None = None, title: str | None = None
    ) -> FakeChat:
        """Register (or return) a chat: positive ids are private chats, negative ones groups."""
        if chat_id in self.chats:
            return self.chats[chat_id]
        if chat_id > 0:
            if chat_type not in (None, "private"):
                raise ValueError("positive chat ids are private chats")
            chat = FakeChat(id=chat_id, type="private", user=self.add_user(chat_id))
        else:
            default: ChatType = "supergroup" if str(chat_id).startswith("-100") else "group"
            kind = chat_type or default
            if kind == "private":
                raise ValueError("private chats have the user's (positive) id")
            chat = FakeChat(id=chat_id, type=kind, title=title or f"Test {kind} {chat_id}")
        self.chats[chat_id] = chat
        return chat

    def chat(self, chat_id: int) -> FakeChat:
        """A known chat (KeyError names the known ones)."""
        try:
            return self.chats[chat_id]
        except KeyError:
            raise KeyError(f"no chat {chat_id}; known chats: {sorted(self.chats)}") from None

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        """A message of a chat as it shows now."""
        return self.chat(chat_id).messages[message_id]

    def current_draft(self, chat_id: int) -> Draft | None:
        """The draft the user of a private chat sees now, if any."""
        return self.chat(chat_id).current_draft(self.clock(), DRAFT_LIFETIME_S)

    # ----------------------------------------------------------------- injecting updates

    def push_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        reply_to: int | None = None,
        mention: bool = False,
        entities: list[dict[str, Any]] | None = None,
        quote: str | None = None,
    ) -> dict[str, Any]:
        """A user sends text; mention=True prefixes '@botname ' with a mention entity.

        `quote`: the part of the replied-to message the user selected (Telegram's quote reply).
        """
        entities = list(entities or [])
        if mention:
            text, entities = self._with_mention(text, entities)
        extra = self._quote(chat_id, reply_to, quote)
        message = self._new_message(chat_id, user_id, text, entities, reply_to, {})
        return self._push_message({**message, **extra})

    def push_document(
        self,
        chat_id: int,
        file_name: str,
        content: bytes,
        *,
        mime_type: str | None = None,
        caption: str | None = None,
        user_id: int | None = None,
        reply_to: int | None = None,
        mention: bool = False,
        file_size: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a file (with an optional caption); the bot may fetch it with getFile.

        `file_size` overrides the size Telegram reports (content stays what is served).
        """
        number = next(self._file_ids)
        file_id = f"fake-document-{number}"
        self.files[file_id] = (f"documents/file_{number}{_suffix(file_name)}", content)
        document: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": f"udocument{number}",
            "file_name": file_name,
            "file_size": len(content) if file_size is None else file_size,
        }
        if mime_type is not None:
            document["mime_type"] = mime_type
        entities: list[dict[str, Any]] = []
        if mention:
            caption, entities = self._with_mention(caption or "", entities)
        payload = self._new_message(
            chat_id, user_id, caption, entities, reply_to, {"document": document}
        )
        return self._push_message(payload)

    def _with_mention(
        self, text: str, entities: list[dict[str, Any]]
    ) -> tuple[str, list[dict[str, Any]]]:
        handle = f"@{self.bot_username}"
        shift = utf16_len(handle) + 1
        shifted = [
            {"type": "mention", "offset": 0, "length": utf16_len(handle)},
            *({**entity, "offset": entity["offset"] + shift} for entity in entities),
        ]
        return f"{handle} {text}".rstrip(), shifted

    def _quote(self, chat_id: int, reply_to: int | None, quote: str | None) -> dict[str, Any]:
        """The Message.quote field: a part of the replied-to message, as Telegram checks it."""
        if quote is None:
            return {}
        replied = self.chat(chat_id).messages.get(reply_to or 0)
        if replied is None or replied.text is None or quote not in replied.text:
            raise ValueError(f"{quote!r} is not part of the replied-to message {reply_to}")
        position = utf16_len(replied.text[: replied.text.index(quote)])
        return {"quote": {"text": quote, "position": position, "is_manual": True}}

    def push_command(
        self,
        chat_id: int,
        command: str,
        args: str = "",
        *,
        user_id: int | None = None,
        with_username: bool = False,
    ) -> dict[str, Any]:
        """A user sends /command [args] (as /command@botname with with_username)."""
        head = "/" + command.lstrip("/")
        if with_username:
            head += f"@{self.bot_username}"
        text = f"{head} {args}" if args else head
        entity = {"type": "bot_command", "offset": 0, "length": utf16_len(head)}
        return self._push_message(self._new_message(chat_id, user_id, text, [entity], None, {}))

    def push_media(
        self,
        chat_id: int,
        kind: Literal["sticker", "photo", "voice"],
        *,
        user_id: int | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a non-text message: a sticker, a photo or a voice note."""
        number = next(self._file_ids)
        file = {"file_id": f"fake-{kind}-{number}", "file_unique_id": f"u{kind}{number}"}
        extra: dict[str, Any]
        if kind == "sticker":
            extra = {
                "sticker": {
                    **file,
                    "type": "regular",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                    "emoji": "👍",
                }
            }
        elif kind == "photo":
            extra = {"photo": [{**file, "width": 90, "height": 90, "file_size": 1024}]}
        elif kind == "voice":
            extra = {"voice": {**file, "duration": 3, "mime_type": "audio/ogg", "file_size": 4096}}
        else:
            raise ValueError(f"unknown media kind {kind!r}")
        return self._push_message(self._new_message(chat_id, user_id, caption, [], reply_to, extra))

    def push_callback(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None
    ) -> str:
        """A user presses the inline button with callback_data=data; returns the query id."""
        chat = self.chat(chat_id)
        message = chat.messages.get(message_id)
        if message is None or message.is_deleted or not message.is_from_bot:
            raise ValueError(f"chat {chat_id} shows no bot message {message_id}")
        if not any(button.get("callback_data") == data for button in message.buttons):
            raise ValueError(
                f"message {message_id} shows no button with callback_data {data!r}: "
                f"{message.buttons}"
            )
        user = self._sender(chat, user_id)
        query_id = str(next(self._query_ids))
        self.callback_queries[query_id] = CallbackQueryState(
            id=query_id, chat_id=chat_id, message_id=message_id, data=data, from_user=user
        )
        query = {
            "id": query_id,
            "from": user,
            "message": message_to_api(chat, message),
            "chat_instance": str(abs(chat_id) * 7919),
            "data": data,
        }
        self._push_update({"callback_query": query})
        return query_id

    async def push_webhook_update(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        secret_token: SecretChoice = Secret.REGISTERED,
        url: str | None = None,
    ) -> WebhookDelivery:
        """A user sends text and Telegram POSTs the Update to the webhook; returns how it went.

        The body is the Update getUpdates would return; the X-Telegram-Bot-Api-Secret-Token
        header carries the secret set with setWebhook, or `secret_token` (None: no header).
        `url` defaults to the webhook's. An update the bot did not take (no 2xx answer) stays
        pending and shows in getWebhookInfo's last_error_message, as on Telegram.
        """
        webhook = self.webhook
        if url is None:
            if webhook is None:
                raise RuntimeError("no webhook is set: the bot has not called setWebhook")
            url = webhook.url
        if secret_token is Secret.REGISTERED:
            secret_token = webhook.secret_token if webhook is not None else None
        payload = self._new_message(chat_id, user_id, text, [], None, {})
        update = self._new_update({"message": payload})
        if self._webhook_session is None:
            # One session, like Telegram's few kept-alive connections to a webhook.
            self._webhook_session = aiohttp.ClientSession()
        delivery = await post_update(self._webhook_session, url, update, secret_token)
        self.webhook_deliveries.append(delivery)
        if webhook is not None:
            record_outcome(webhook, delivery)
        if not delivery.is_ok:
            self._pending.append(update)  # Telegram keeps it and tries again later
        self._notify()
        return delivery

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset nor taken by the webhook."""
        return list(self._pending)

    def _push_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue a user's message (from _new_message) as an update for getUpdates."""
        self._push_update({"message": payload})
        return payload

    def _new_message(
        self,
        chat_id: int,
        user_id: int | None,
        text: str | None,
        entities: list[dict[str, Any]],
        reply_to: int | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """A user's message, now in the chat; returns the Bot API Message object."""
        chat = self.add_chat(chat_id)
        if reply_to is not None and reply_to not in chat.messages:
            raise ValueError(f"chat {chat_id} has no message {reply_to} to reply to")
        message = ChatMessage(
            message_id=chat.next_message_id(),
            chat_id=chat_id,
            from_user=self._sender(chat, user_id),
            date=int(time.time()),
            text=text,
            entities=tuple(entities),
            reply_to_message_id=reply_to,
            versions=[text] if text is not None else [],
            extra=extra,
        )
        chat.messages[message.message_id] = message
        return message_to_api(chat, message)

    def _sender(self, chat: FakeChat, user_id: int | None) -> dict[str, Any]:
        if chat.type == "private":
            if user_id not in (None, chat.id):
                raise ValueError("in a private chat only its user (id == chat id) writes")
            return self.add_user(chat.id)
        return self.add_user(user_id or DEFAULT_GROUP_USER_ID)

    def _push_update(self, body: dict[str, Any]) -> dict[str, Any]:
        update = self._new_update(body)
        self._pending.append(update)
        self._wake_pollers()
        self._notify()
        return update

    def _new_update(self, body: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **body}
        self.updates.append(update)
        return update

    # ----------------------------------------------------------------- faults

    def inject_retry_after(
        self,
        method: str,
        retry_after: int,
        *,
        chat_id: int | str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of method (in chat_id, or any chat) get 429 retry_after."""
        self._faults.add(
            Fault(
                method=method,
                chat_id=chat_id,
                times=times,
                status=429,
                description=f"Too Many Requests: retry after {retry_after}",
                retry_after=retry_after,
            )
        )

    def inject_error(
        self,
        method: str,
        status: int = 500,
        *,
        description: str | None = None,
        chat_id: int | str | None = None,
        times: int = 1,
        raw_body: str | None = None,
    ) -> None:
        """The next `times` calls of method get this HTTP error (raw_body: a non-JSON page)."""
        if description is None:
            description = HTTPStatus(status).phrase
        self._faults.add(
            Fault(
                method=method,
                chat_id=chat_id,
                times=times,
                status=status,
                description=description,
                raw_body=raw_body,
            )
        )

    def inject_delay(
        self, method: str, seconds: float, *, chat_id: int | str | None = None, times: int = 1
    ) -> None:
        """The next `times` calls of method take effect at once but are answered `seconds` late."""
        self._faults.add(Fault(method=method, chat_id=chat_id, times=times, delay=seconds))

    def clear_faults(self) -> None:
        """Forget all queued faults."""
        self._faults.clear()

    def set_flood_control(self, limits: FloodLimits | None = None) -> None:
        """Refuse calls over Telegram-like rate limits with 429 (None limits: the defaults)."""
        self._flood = FloodControl(limits or FloodLimits(), self.clock)

    def disable_flood_control(self) -> None:
        """Stop rate limiting."""
        self._flood = None

    # ----------------------------------------------------------------- waiting and queries

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait until predicate() is truthy (re-checked on every server event) and return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [f"{c.method}({c.chat_id})->{c.status}" for c in self.calls[-10:]]
                raise TimeoutError(f"condition not met in {timeout}s; last calls: {recent}")
            changed = self._changed
            # The short cap lets predicates that look at state outside the fake work too.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))

    async def wait_for_call(
        self,
        method: str,
        *,
        chat_id: int | str | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> Call:
        """Wait until `count` calls of method (in chat_id) were answered; return the last one."""

        def answered() -> Call | None:
            calls = [c for c in self.calls_of(method, chat_id=chat_id) if c.status is not None]
            return calls[count - 1] if len(calls) >= count else None

        return await self.wait_for(answered, timeout)

    def calls_of(
        self, method: str, *, chat_id: int | str | None = None, is_ok: bool | None = None
    ) -> list[Call]:
        """Recorded calls of a method (case-insensitive), optionally in one chat or by outcome."""
        return [
            call
            for call in self.calls
            if call.method.lower() == method.lower()
            and (chat_id is None or call.chat_id == chat_id)
            and (is_ok is None or call.is_ok == is_ok)
        ]

    # ----------------------------------------------------------------- HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        method, handler = self._handlers.get(name.lower(), (name, None))
        at = self.clock()
        read_error: ApiError | None = None
        try:
            params = await _read_params(request)
        except ApiError as error:
            params, read_error = {}, error
        call = Call(at=at, method=method, chat_id=params.get("chat_id"), params=params)
        self.calls.append(call)
        self._notify()
        try:
            if read_error is not None:
                raise read_error
            result = await self._dispatch(request.match_info["token"], call, handler)
        except ApiError as error:
            return self._finish_error(call, error)
        except asyncio.CancelledError:
            # 499 is nginx's "client closed request": the bot gave up on this call.
            self._finish(call, 499, "client closed request", None)
            raise
        except Exception as error:  # a bug in the fake: make it visible to the test
            return self._finish_error(call, ApiError(500, f"fake server failed: {error!r}"))
        self._finish(call, 200, None, result)
        return web.json_response({"ok": True, "result": result})

    async def _dispatch(self, token: str, call: Call, handler: Handler | None) -> Any:
        # Telegram answers 404 to a malformed token and 401 to a well-formed unknown one.
        if handler is None or not _TOKEN_RE.fullmatch(token):
            raise ApiError(404, "Not Found")
        if token != self.token:
            raise ApiError(401, "Unauthorized")
        fault = self._faults.take(call.method, call.chat_id)
        if fault is not None and fault.status is not None:
            raise ApiError(
                fault.status,
                fault.description,
                retry_after=fault.retry_after,
                raw_body=fault.raw_body,
            )
        if self._flood is not None:
            chat = self.chats.get(call.chat_id) if isinstance(call.chat_id, int) else None
            is_group = chat is not None and chat.is_group
            retry_after = self._flood.admit(call.method, call.chat_id, is_group)
            if retry_after is not None:
                raise ApiError(
                    429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
                )
        result = await handler(call.params)
        if fault is not None and fault.delay:
            # The call took effect; only the answer is late (a client that gives up sees 499).
            await asyncio.sleep(fault.delay)
        return result

    def _finish(self, call: Call, status: int, description: str | None, result: Any) -> None:
        call.status, call.description, call.result = status, description, result
        call.finished_at = self.clock()
        self._notify()

    def _finish_error(self, call: Call, error: ApiError) -> web.Response:
        self._finish(call, error.status, error.description, None)
        if error.raw_body is not None:
            return web.Response(status=error.status, text=error.raw_body, content_type="text/html")
        body: dict[str, Any] = {
            "ok": False,
            "error_code": error.status,
            "description": error.description,
        }
        if error.retry_after is not None:
            body["parameters"] = {"retry_after": error.retry_after}
        return web.json_response(body, status=error.status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        # Files pushed with push_document are served at the path getFile gave for them.
        path = request.match_info["path"]
        if request.match_info["token"] == self.token:
            for file_path, content in self.files.values():
                if file_path == path:
                    self.downloads.append(path)
                    self._notify()
                    return web.Response(body=content, content_type="application/octet-stream")
        body = {"ok": False, "error_code": 404, "description": "Not Found"}
        return web.json_response(body, status=404)

    async def _get_file(self, params: Params) -> dict[str, Any]:
        file_id = str(params.get("file_id", ""))
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        file_path, content = self.files[file_id]
        if len(content) > MAX_DOWNLOAD_BYTES:
            raise ApiError(400, "Bad Request: file is too big")
        number = file_id.rsplit("-", 1)[-1]
        return {
            "file_id": file_id,
            "file_unique_id": f"udocument{number}",
            "file_size": len(content),
            "file_path": file_path,
        }

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _wake_pollers(self) -> None:
        self._new_updates.set()
        self._new_updates = asyncio.Event()

    # ----------------------------------------------------------------- Bot API methods

    async def _get_updates(self, params: Params) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, WEBHOOK_ACTIVE)
        offset = params.get("offset")
        if offset:
            self._confirm(offset)
        limit = min(max(params.get("limit", 100), 1), 100)
        allowed = params.get("allowed_updates") or None
        timeout = max(0.0, params.get("timeout", 0.0))
        # A newer getUpdates ends any held one, as Telegram does (409 Conflict).
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.num_waiting_polls += 1
        self._notify()
        try:
            while True:
                if generation != self._poll_generation:
                    raise ApiError(409, GET_UPDATES_CONFLICT)
                if self.webhook is not None:
                    raise ApiError(409, TERMINATED_BY_SET_WEBHOOK)
                ready = [u for u in self._pending if allowed is None or _update_type(u) in allowed]
                remaining = deadline - loop.time()
                if ready or self._is_closing or remaining <= 0:
                    return ready[:limit]
                new_updates = self._new_updates
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(new_updates.wait(), remaining)
        finally:
            self.num_waiting_polls -= 1
            self._notify()

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            # A negative offset keeps only the last -offset updates.
            del self._pending[:offset]
        else:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]

    async def _set_webhook(self, params: Params) -> bool:
        webhook = webhook_from_params(params)  # None: an empty url removes the webhook
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = webhook
        self._wake_pollers()  # a held getUpdates ends: "terminated by setWebhook request"
        return True

    async def _delete_webhook(self, params: Params) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = None
        return True

    async def _get_webhook_info(self, params: Params) -> dict[str, Any]:
        if self.webhook is None:
            return no_webhook_info(len(self._pending))
        return self.webhook.to_api(len(self._pending))


# --------------------------------------------------------------------- helpers


def _suffix(file_name: str) -> str:
    _, dot, extension = file_name.rpartition(".")
    return f".{extension}" if dot and extension.isalnum() else ""


async def _read_params(request: web.Request) -> Params:
    """Query string plus a form, multipart or JSON body, decoded to Python values."""
    raw: dict[str, Any] = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: can't parse JSON request body")
            raw.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    raw[key] = value
                else:  # an uploaded file: keep what tests might check, not the bytes
                    raw[key] = {"filename": value.filename, "content_type": value.content_type}
    return decode_params(raw)


def _update_type(update: dict[str, Any]) -> str:
    return next(key for key in update if key != "update_id")
