"""Loopback fake of Discord's REST API and gateway, for tests that drive the real discord.py.

Usage::

    async with FakeDiscord() as dc:
        alice = dc.add_user("alice")
        guild = dc.add_guild("Lab", members=[alice])
        connector = await connector_for(dc.api_base, dc.token)  # bot.frontends.discord_ui.connect
        client = discord.Client(intents=..., connector=connector, guild_ready_timeout=0.1)
        ...  # start the client, wait for on_ready
        rec = await dc.slash(alice, "chat", prompt="hi", guild=guild)
        await dc.wait_for(lambda: rec.original and rec.original.content)

Route keys (used by `calls_to`, `rate_limit`, `fail`) are "METHOD /template" with the template
as Discord documents it, e.g. "PATCH /webhooks/{application_id}/{token}/messages/@original".
The world and records live in discord_state, wire formats in discord_wire, the WebSocket
side in discord_gateway; this module is the server and the test-facing API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from .discord_gateway import FakeGateway, GatewaySession
from .discord_state import (
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_MODAL,
    CALLBACK_UPDATE_MESSAGE,
    DEFAULT_PERMISSIONS,
    DID_NOT_RESPOND,
    FLAG_EPHEMERAL,
    FLAG_IS_COMPONENTS_V2,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    PRIVILEGED_INTENTS,
    SETTABLE_FLAGS,
    CallRecord,
    DiscordWorld,
    FakeChannel,
    FakeGuild,
    FakeUser,
    InteractionRecord,
    MessageRecord,
)
from .discord_wire import (
    ApiError,
    Body,
    form_error,
    json_response,
    read_body,
    validate_command,
    validate_message,
)

T = TypeVar("T")

API_PREFIX = "/api/v10"
OPTION_ATTACHMENT = 11
GATEWAY_PATH = "/gateway"
_MENTION = re.compile(r"<@!?(\d+)>")


def _subcommand(spec: dict[str, Any], name: str, command: str) -> dict[str, Any]:
    for option in spec.get("options", []):
        if option["name"] == name and option.get("type") in (1, 2):
            return option
    raise LookupError(f"/{command}: no subcommand {name!r}")


def _modal_answers(modal: dict[str, Any], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """A modal's submit payload: each text input's value, in rows (type 1) or labels (18)."""

    def answer(item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": item["type"],
            "custom_id": item["custom_id"],
            "value": values.get(item["custom_id"], ""),
        }

    answers: list[dict[str, Any]] = []
    for item in modal.get("components", []):
        if item.get("type") == 1:
            answers.append({"type": 1, "components": [answer(c) for c in item["components"]]})
        elif item.get("type") == 18 and isinstance(item.get("component"), dict):
            answers.append({"type": 18, "component": answer(item["component"])})
    return answers


@dataclass
class _Fault:
    times: int
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


# ----------------------------------------------------------------------------- the server


class FakeDiscord:
    """Discord REST API and gateway on 127.0.0.1, with recording, injection and faults."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "r1bot",
        token_ttl: float = 15 * 60,
        response_deadline: float = 3.0,
        heartbeat_interval: float = 41.25,
        privileged_intents: int = PRIVILEGED_INTENTS,
    ) -> None:
        self.token = token
        self.token_ttl = token_ttl
        self.response_deadline = response_deadline
        self.world = DiscordWorld(bot_name=bot_name, privileged_intents=privileged_intents)
        self.gateway = FakeGateway(
            self.world,
            token=token,
            heartbeat_interval=heartbeat_interval,
            url=lambda: self.gateway_url,
            on_change=self._changed,
        )
        self.calls: list[CallRecord] = []
        self.messages: list[MessageRecord] = []
        self.interactions: list[InteractionRecord] = []
        self.typing: list[tuple[float, int]] = []
        self.attachment_files: dict[str, bytes] = {}  # attachment id -> content (the CDN)
        self.downloads: list[str] = []  # names of the attachments the bot fetched
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._changed_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._route_keys: set[str] = set()

    # -- lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Binds a random loopback port and starts serving."""
        app = web.Application()
        app.router.add_get(GATEWAY_PATH, self.gateway.handle)
        app.router.add_get(
            "/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment
        )
        self._add_routes(app.router)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        """Closes gateway connections (1001 going away) and the server."""
        for timer in self._timers:
            timer.cancel()
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{GATEWAY_PATH}"

    # -- world building (delegates to the world; see DiscordWorld)

    @property
    def bot(self) -> FakeUser:
        return self.world.bot

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def users(self) -> dict[int, FakeUser]:
        return self.world.users

    @property
    def guilds(self) -> list[FakeGuild]:
        return self.world.guilds

    @property
    def sessions(self) -> list[GatewaySession]:
        return self.gateway.sessions

    def add_user(self, name: str) -> FakeUser:
        """Creates a (human) user."""
        return self.world.add_user(name)

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        members: Iterable[FakeUser] = (),
        managers: Iterable[FakeUser] = (),
        owner: FakeUser | None = None,
        channels: Iterable[str] = ("general",),
    ) -> FakeGuild:
        """Creates a guild the bot is in; managers get a role with Manage Server."""
        guild = self.world.add_guild(
            name, members=members, managers=managers, owner=owner, channels=channels
        )
        if self.gateway.ready_sessions(guild.id):
            self._spawn(self.gateway.guild_joined(guild))
        return guild

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The bot's DM channel with a user (created on first use)."""
        return self.world.dm_channel(user)

    def channel(self, channel_id: int) -> FakeChannel | None:
        return self.world.channel(channel_id)

    def guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self.world.guild_of(channel)

    # -- observation

    def calls_to(self, route: str) -> list[CallRecord]:
        """REST calls to one route key, e.g. 'POST /channels/{channel_id}/messages'."""
        return [call for call in self.calls if call.route == route]

    def message(self, message_id: int) -> MessageRecord | None:
        return next((m for m in self.messages if m.id == message_id), None)

    def messages_in(self, channel: FakeChannel) -> list[MessageRecord]:
        return [m for m in self.messages if m.channel is channel and not m.is_deleted]

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Waits until predicate() is truthy (re-checked on every state change); returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            event = self._changed_event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = asyncio.Event()

    # -- fault injection

    def rate_limit(
        self,
        route: str,
        *,
        times: int = 1,
        retry_after: float = 0.1,
        is_global: bool = False,
        scope: str = "user",
    ) -> None:
        """Answers the next `times` calls to `route` with 429 like Discord does."""
        reset_after = f"{retry_after:.3f}"
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Scope": "global" if is_global else scope,
            # discord.py treats a 429 without Via as a Cloudflare ban and gives up.
            "Via": "1.1 google",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers |= {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": reset_after,
                "X-RateLimit-Bucket": self._bucket(route),
            }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        self._add_fault(route, _Fault(times, 429, body, headers))

    def fail(
        self,
        route: str,
        status: int,
        *,
        code: int = 0,
        message: str = "injected failure",
        times: int = 1,
    ) -> None:
        """Answers the next `times` calls to `route` with an error status and JSON body."""
        self._add_fault(route, _Fault(times, status, {"message": message, "code": code}, {}))

    def _add_fault(self, route: str, fault: _Fault) -> None:
        if route not in self._route_keys:
            raise ValueError(f"unknown route {route!r}; known: {sorted(self._route_keys)}")
        self._faults.setdefault(route, []).append(fault)

    def _take_fault(self, route: str) -> _Fault | None:
        queue = self._faults.get(route)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    # -- injection: interactions

    async def slash(
        self,
        user: FakeUser,
        command: str,
        *,
        guild: FakeGuild | None = None,
        channel: FakeChannel | None = None,
        option_values: Mapping[str, Any] | None = None,
        locale: str = "en-US",
        **options: Any,
    ) -> InteractionRecord:
        """Invokes a synced slash command ('name' or 'group sub') as `user`; returns its record.

        Options come as keyword arguments (or option_values for names like 'guild');
        a FakeUser value for a user option is resolved like Discord does.
        """
        channel, guild = self._place(user, guild, channel)
        path = command.split()
        definition = self._find_command(path[0], guild)
        values = dict(option_values or {}) | options
        data: dict[str, Any] = {"id": definition["id"], "name": path[0], "type": 1}
        if definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        holder: dict[str, Any] = data
        spec = definition
        for sub in path[1:]:
            spec = _subcommand(spec, sub, command)
            child: dict[str, Any] = {"name": sub, "type": spec["type"]}
            holder["options"] = [child]
            holder = child
        resolved: dict[str, dict[str, Any]] = {}
        holder["options"] = self._build_options(spec, values, guild, resolved)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(
            INTERACTION_APPLICATION_COMMAND, command, user, channel, guild, data, locale=locale
        )

    async def click(
        self, user: FakeUser, message: MessageRecord, custom_id: str
    ) -> InteractionRecord:
        """Clicks a button on a message."""
        return await self._component(user, message, custom_id, {})

    async def select(
        self, user: FakeUser, message: MessageRecord, custom_id: str, values: list[str]
    ) -> InteractionRecord:
        """Picks values in a select menu on a message."""
        return await self._component(user, message, custom_id, {"values": values})

    async def submit_modal(
        self, user: FakeUser, shown: InteractionRecord, values: Mapping[str, str]
    ) -> InteractionRecord:
        """Submits the modal the bot showed in answer to `shown`, with text input values."""
        if shown.modal is None:
            raise LookupError("that interaction was not answered with a modal")
        data = {
            "custom_id": shown.modal["custom_id"],
            "components": _modal_answers(shown.modal, values),
        }
        return await self._interact(
            INTERACTION_MODAL_SUBMIT,
            shown.modal["custom_id"],
            user,
            shown.channel,
            shown.guild,
            data,
            source=shown.source_message,
        )

    async def _component(
        self, user: FakeUser, message: MessageRecord, custom_id: str, extra: dict[str, Any]
    ) -> InteractionRecord:
        component = message.custom_ids().get(custom_id)
        if component is None or message.is_deleted:
            raise LookupError(f"message {message.id} has no component {custom_id!r}")
        if component.get("disabled"):
            raise LookupError(f"component {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": component["type"]} | extra
        return await self._interact(
            INTERACTION_MESSAGE_COMPONENT,
            custom_id,
            user,
            message.channel,
            self.guild_of(message.channel),
            data,
            source=message,
        )

    async def _interact(
        self,
        kind: int,
        name: str,
        user: FakeUser,
        channel: FakeChannel,
        guild: FakeGuild | None,
        data: dict[str, Any],
        *,
        source: MessageRecord | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        session = self.gateway.interaction_session(guild)
        interaction_id = self.world.ids.next()
        digest = hashlib.sha1(str(interaction_id).encode()).hexdigest()
        token = f"aW50ZXJhY3Rpb24.{interaction_id}.{digest}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.to_json(),
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "authorizing_integration_owners": {"0": str(guild.id) if guild else "0"},
            "context": 0 if guild else 1,
        }
        if guild is not None:
            payload |= {
                "guild_id": str(guild.id),
                "guild_locale": "en-US",
                "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
                "member": guild.member_json(user, with_permissions=True),
                "app_permissions": str(guild.permissions_of(self.bot)),
            }
        else:
            payload["user"] = user.to_json()
            payload["app_permissions"] = str(DEFAULT_PERMISSIONS)
        if source is not None:
            payload["message"] = source.to_json(app_id=self.application_id)
        now = time.monotonic()
        record = InteractionRecord(
            interaction_id,
            token,
            kind,
            name,
            user,
            channel,
            guild,
            payload,
            now,
            now + self.token_ttl,
            source_message=source,
        )
        self.interactions.append(record)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.response_deadline, self._expire, record))
        await session.dispatch("INTERACTION_CREATE", payload)
        self._changed()
        return record

    def _expire(self, record: InteractionRecord) -> None:
        if record.status == "pending":
            record.status = "failed"
            record.failure = DID_NOT_RESPOND
            self._changed()

    def _place(
        self, user: FakeUser, guild: FakeGuild | None, channel: FakeChannel | None
    ) -> tuple[FakeChannel, FakeGuild | None]:
        if channel is not None:
            return channel, self.guild_of(channel)
        if guild is not None:
            return guild.default_channel, guild
        return self.dm_channel(user), None

    def _find_command(self, name: str, guild: FakeGuild | None) -> dict[str, Any]:
        scoped = self.guild_commands.get(guild.id, []) if guild else []
        for definition in (*scoped, *self.commands):
            if definition["name"] == name and definition.get("type", 1) == 1:
                return definition
        raise LookupError(f"/{name} is not synced (global or for this guild)")

    def _build_options(
        self,
        spec: dict[str, Any],
        values: dict[str, Any],
        guild: FakeGuild | None,
        resolved: dict[str, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        known = {o["name"]: o for o in spec.get("options", []) if o.get("type") not in (1, 2)}
        out = []
        for name, value in values.items():
            if name not in known:
                raise LookupError(f"option {name!r} is not defined; defined: {sorted(known)}")
            option_type = known[name]["type"]
            choices = [c["value"] for c in known[name].get("choices", [])]
            if choices and value not in choices:
                raise ValueError(f"option {name!r}: {value!r} is not one of {choices}")
            if option_type == OPTION_ATTACHMENT:
                value = self._upload_option(value, resolved)
            elif isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = value.to_json()
                if guild is not None and value.id in guild.members:
                    resolved.setdefault("members", {})[str(value.id)] = guild.member_json(
                        value, with_user=False, with_permissions=True
                    )
                value = str(value.id)
            out.append({"name": name, "type": option_type, "value": value})
        missing = [n for n, o in known.items() if o.get("required") and n not in values]
        if missing:
            raise ValueError(f"required options missing: {missing}")
        return out

    def _upload_option(
        self, upload: tuple[str, bytes, str | None], resolved: dict[str, dict[str, Any]]
    ) -> str:
        """An attachment option: (file name, content, content type) uploaded, then resolved."""
        name, content, content_type = upload
        attachment_id = str(self.world.ids.next())
        url = f"{self.base_url}/attachments/0/{attachment_id}/{name}"
        resolved.setdefault("attachments", {})[attachment_id] = {
            "id": attachment_id,
            "filename": name,
            "size": len(content),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        self.attachment_files[attachment_id] = content
        return attachment_id

    # -- injection: messages

    async def inject_message(
        self,
        user: FakeUser,
        content: str,
        *,
        guild: FakeGuild | None = None,
        channel: FakeChannel | None = None,
        mention_bot: bool = False,
        reply_to: MessageRecord | None = None,
        attachments: Sequence[tuple[str, bytes, str | None]] = (),
    ) -> MessageRecord:
        """A user posts a message (DM when no guild/channel); dispatches MESSAGE_CREATE.

        `attachments`: (file name, content, content type) of files sent with it; the bot can
        fetch them from their URL, as from Discord's CDN.
        """
        channel, guild = self._place(user, guild, channel)
        if mention_bot:
            content = f"{self.bot.mention} {content}"
        mentioned = [self.users[int(i)] for i in _MENTION.findall(content) if int(i) in self.users]
        if reply_to is not None and reply_to.author not in mentioned:
            mentioned.append(reply_to.author)
        member = guild.member_json(user, with_user=False) if guild else None
        record = MessageRecord(
            self.world.ids.next(),
            "user",
            channel,
            user,
            content,
            mentions=mentioned,
            member_json=member,
            referenced=reply_to,
            type=19 if reply_to else 0,
        )
        for name, content, content_type in attachments:
            upload = {"filename": name, "size": len(content), "content_type": content_type}
            attachment = self._attachment(record, upload)
            self.attachment_files[attachment["id"]] = content
            record.attachments.append(attachment)
        record.snapshot()
        self.messages.append(record)
        await self.gateway.broadcast_message("MESSAGE_CREATE", record)
        self._changed()
        return record

    # -- gateway

    async def reconnect_gateway(self) -> None:
        """Sends op 7 RECONNECT on every connection; discord.py then RESUMEs."""
        await self.gateway.reconnect_all()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    # -- REST plumbing

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        app, token = "/{application_id}", "/{token}"
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", f"/applications{app}/commands", self._get_commands),
            ("PUT", f"/applications{app}/commands", self._put_commands),
            ("GET", f"/applications{app}/guilds/{{guild_id}}/commands", self._get_commands),
            ("PUT", f"/applications{app}/guilds/{{guild_id}}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("GET", f"/webhooks{app}{token}/messages/@original", self._get_webhook_message),
            ("PATCH", f"/webhooks{app}{token}/messages/@original", self._edit_webhook_message),
            ("DELETE", f"/webhooks{app}{token}/messages/@original", self._delete_webhook_message),
            ("GET", f"/webhooks{app}{token}/messages/{{message_id}}", self._get_webhook_message),
            ("PATCH", f"/webhooks{app}{token}/messages/{{message_id}}", self._edit_webhook_message),
            (
                "DELETE",
                f"/webhooks{app}{token}/messages/{{message_id}}",
                self._delete_webhook_message,
            ),
            ("POST", f"/webhooks{app}{token}", self._followup),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
        ]
        for method, template, handler in routes:
            key = f"{method} {template}"
            router.add_route(method, API_PREFIX + template, self._serve(key, handler))
            self._route_keys.add(key)
        router.add_route("*", API_PREFIX + "/{tail:.*}", self._serve(None, self._not_found))

    def _serve(self, route: str | None, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps a handler: record the call, apply faults and auth, add rate-limit headers."""

        async def serve(request: web.Request) -> web.StreamResponse:
            key = route or f"{request.method} {request.path[len(API_PREFIX) :]}"
            call = CallRecord(
                time.monotonic(), request.method, key, request.path, dict(request.query), None, []
            )
            self.calls.append(call)
            try:
                body = await read_body(request)
                call.json, call.files = body.json, body.files
                fault = self._take_fault(key)
                if fault is not None:
                    response = json_response(fault.body, status=fault.status, headers=fault.headers)
                else:
                    self._check_auth(request, key)
                    response = await handler(request, body)
            except ApiError as error:
                response = error.response()
            if response.status != 429 and route is not None:
                response.headers.update(self._ratelimit_headers(key))
            call.status = response.status
            self._changed()
            return response

        return serve

    def _check_auth(self, request: web.Request, route: str) -> None:
        template = route.split(" ", 1)[1]
        if template.startswith(("/webhooks/", "/interactions/")) or template == "/gateway":
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    def _ratelimit_headers(self, route: str) -> dict[str, str]:
        # A constant "plenty left" keeps discord.py's bucket logic active without slowing tests.
        return {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": self._bucket(route),
            "Via": "1.1 google",
        }

    @staticmethod
    def _bucket(route: str) -> str:
        return hashlib.sha1(route.encode()).hexdigest()[:16]

    async def _not_found(self, request: web.Request, body: Body) -> web.Response:
        raise ApiError(404, 0, "404: Not Found")

    # -- REST: session and application

    async def _get_gateway(self, request: web.Request, body: Body) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, body: Body) -> web.Response:
        return json_response(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_me(self, request: web.Request, body: Body) -> web.Response:
        return json_response(self.world.bot_user_json())

    async def _get_user(self, request: web.Request, body: Body) -> web.Response:
        user = self.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.to_json())

    async def _get_application(self, request: web.Request, body: Body) -> web.Response:
        return json_response(
            {
                "id": str(self.application_id),
                "name": self.bot.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.world.app_owner.to_json(),
                "team": None,
                "flags": self.world.app_flags(),
                "bot": self.bot.to_json(),
                "interactions_endpoint_url": None,
                "tags": [],
                "redirect_uris": [],
                "rpc_origins": [],
                "approximate_guild_count": len(self.guilds),
            }
        )

    async def _create_dm(self, request: web.Request, body: Body) -> web.Response:
        recipient = int((body.json or {}).get("recipient_id", 0))
        user = self.users.get(recipient)
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(self.dm_channel(user).to_json())

    # -- REST: application commands

    def _check_app(self, request: web.Request) -> None:
        if request.match_info["application_id"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")

    def _command_list(self, request: web.Request) -> list[dict[str, Any]]:
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return self.commands
        if not any(str(g.id) == guild_id for g in self.guilds):
            raise ApiError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(guild_id), [])

    async def _get_commands(self, request: web.Request, body: Body) -> web.Response:
        self._check_app(request)
        return json_response(self._command_list(request))

    async def _put_commands(self, request: web.Request, body: Body) -> web.Response:
        self._check_app(request)
        current = self._command_list(request)
        commands = body.json
        if not isinstance(commands, list):
            raise form_error("_root", "LIST_TYPE_CONVERT", "Must be a list.")
        guild_id = request.match_info.get("guild_id")
        stored = []
        for index, command in enumerate(commands):
            validate_command(command, str(index))
            kind = command.get("type", 1)
            old = next(
                (c for c in current if c["name"] == command["name"] and c["type"] == kind), None
            )
            stored.append(
                command
                | {
                    "id": old["id"] if old else str(self.world.ids.next()),
                    "application_id": str(self.application_id),
                    "type": kind,
                    "version": str(self.world.ids.next()),
                    "guild_id": guild_id,
                    "default_member_permissions": command.get("default_member_permissions"),
                    "nsfw": command.get("nsfw", False),
                    "description": command.get("description", ""),
                }
            )
        current[:] = stored
        return json_response(stored)

    # -- REST: interactions

    async def _callback(self, request: web.Request, body: Body) -> web.StreamResponse:
        record = next(
            (i for i in self.interactions if str(i.id) == request.match_info["interaction_id"]),
            None,
        )
        if (
            record is None
            or record.token != request.match_info["token"]
            or record.status == "failed"
        ):
            raise ApiError(404, 10062, "Unknown interaction")
        if record.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        request_json = body.json or {}
        kind, data = request_json.get("type"), request_json.get("data") or {}
        is_component = record.source_message is not None
        if kind == CALLBACK_MESSAGE:
            validate_message(data, "data", require_body=True, files=body.files)
            record.original = self._new_message(record, "original", data, body.files)
        elif kind == CALLBACK_DEFERRED_MESSAGE:
            flags = FLAG_LOADING | (int(data.get("flags", 0)) & FLAG_EPHEMERAL)
            record.original = self._new_message(record, "original", {"flags": flags}, [])
        elif kind == CALLBACK_DEFERRED_UPDATE and is_component:
            record.original = record.source_message
        elif kind == CALLBACK_UPDATE_MESSAGE and is_component:
            assert record.source_message is not None
            validate_message(data, "data", require_body=False, files=body.files)
            self._apply_edit(record.source_message, data, body.files, "data")
            record.original = record.source_message
        elif kind == CALLBACK_MODAL and record.type != INTERACTION_MODAL_SUBMIT:
            for key in ("custom_id", "title", "components"):
                if not data.get(key):
                    raise form_error(f"data.{key}", "BASE_TYPE_REQUIRED", "This field is required")
            record.modal = data
        else:
            raise form_error(
                "type",
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Invalid interaction response type {kind!r} for this interaction",
            )
        record.callback_type, record.callback_payload = kind, request_json
        record.callback_at, record.status = time.monotonic(), "answered"
        if kind in (CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE) and record.original is not None:
            await self.gateway.broadcast_message("MESSAGE_CREATE", record.original)
        elif kind == CALLBACK_UPDATE_MESSAGE and record.original is not None:
            await self.gateway.broadcast_message("MESSAGE_UPDATE", record.original)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        answer: dict[str, Any] = {"interaction": {"id": str(record.id), "type": record.type}}
        resource: dict[str, Any] = {"type": kind}
        if record.original is not None:
            answer["interaction"] |= {
                "response_message_id": str(record.original.id),
                "response_message_loading": record.original.is_loading,
                "response_message_ephemeral": record.original.is_ephemeral,
            }
            resource["message"] = record.original.to_json(app_id=self.application_id)
        answer["resource"] = resource
        return json_response(answer)

    def _interaction_by_token(self, request: web.Request) -> InteractionRecord:
        if request.match_info["application_id"] != str(self.application_id):
            raise ApiError(404, 10015, "Unknown Webhook")
        token = request.match_info["token"]
        record = next((i for i in self.interactions if i.token == token), None)
        if record is None or time.monotonic() >= record.expires_at:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return record

    def _webhook_message(self, request: web.Request) -> tuple[InteractionRecord, MessageRecord]:
        record = self._interaction_by_token(request)
        if record.callback_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        message_id = request.match_info.get("message_id")
        if message_id is None:
            message = record.original
        else:
            candidates = [record.original, *record.followups]
            message = next((m for m in candidates if m and str(m.id) == message_id), None)
        if message is None or message.is_deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return record, message

    async def _get_webhook_message(self, request: web.Request, body: Body) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(message.to_json(app_id=self.application_id))

    async def _edit_webhook_message(self, request: web.Request, body: Body) -> web.Response:
        _, message = self._webhook_message(request)
        payload = body.json or {}
        validate_message(payload, "", require_body=False, files=body.files)
        self._apply_edit(message, payload, body.files, "")
        await self.gateway.broadcast_message("MESSAGE_UPDATE", message)
        return json_response(message.to_json(app_id=self.application_id))

    async def _delete_webhook_message(self, request: web.Request, body: Body) -> web.Response:
        _, message = self._webhook_message(request)
        await self._delete(message)
        return web.Response(status=204)

    async def _followup(self, request: web.Request, body: Body) -> web.Response:
        record = self._interaction_by_token(request)
        if record.callback_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        payload = body.json or {}
        validate_message(payload, "", require_body=True, files=body.files)
        message = self._new_message(record, "followup", payload, body.files)
        record.followups.append(message)
        await self.gateway.broadcast_message("MESSAGE_CREATE", message)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(message.to_json(app_id=self.application_id))

    def _new_message(
        self,
        record: InteractionRecord,
        kind: str,
        data: dict[str, Any],
        files: list[dict[str, Any]],
    ) -> MessageRecord:
        message = MessageRecord(
            self.world.ids.next(),
            kind,
            record.channel,
            self.bot,
            type=20 if record.type == INTERACTION_APPLICATION_COMMAND else 0,
            interaction=record,
            flags=int(data.get("flags", 0)) & (SETTABLE_FLAGS | FLAG_LOADING),
        )
        self._fill(message, data, files)
        message.snapshot()
        self.messages.append(message)
        return message

    # -- REST: channels

    def _channel_or_404(self, request: web.Request) -> FakeChannel:
        channel = self.channel(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _channel_message(self, request: web.Request) -> MessageRecord:
        channel = self._channel_or_404(request)
        message = self.message(int(request.match_info["message_id"]))
        if message is None or message.channel is not channel or message.is_deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def _get_channel(self, request: web.Request, body: Body) -> web.Response:
        return json_response(self._channel_or_404(request).to_json())

    async def _create_message(self, request: web.Request, body: Body) -> web.Response:
        channel = self._channel_or_404(request)
        payload = body.json or {}
        validate_message(payload, "", require_body=True, files=body.files)
        message = MessageRecord(
            self.world.ids.next(),
            "channel",
            channel,
            self.bot,
            flags=int(payload.get("flags", 0)) & SETTABLE_FLAGS & ~FLAG_EPHEMERAL,
        )
        reference = payload.get("message_reference")
        if reference:
            target = self.message(int(reference["message_id"]))
            if target is None and reference.get("fail_if_not_exists", True):
                raise form_error("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
            message.referenced, message.type = target, 19 if target else 0
        self._fill(message, payload, body.files)
        message.snapshot()
        self.messages.append(message)
        await self.gateway.broadcast_message("MESSAGE_CREATE", message)
        return json_response(message.to_json(app_id=self.application_id))

    async def _get_message(self, request: web.Request, body: Body) -> web.Response:
        return json_response(self._channel_message(request).to_json(app_id=self.application_id))

    async def _edit_message(self, request: web.Request, body: Body) -> web.Response:
        message = self._channel_message(request)
        if message.author is not self.bot:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload = body.json or {}
        validate_message(payload, "", require_body=False, files=body.files)
        self._apply_edit(message, payload, body.files, "")
        await self.gateway.broadcast_message("MESSAGE_UPDATE", message)
        return json_response(message.to_json(app_id=self.application_id))

    async def _delete_message(self, request: web.Request, body: Body) -> web.Response:
        await self._delete(self._channel_message(request))
        return web.Response(status=204)

    async def _typing(self, request: web.Request, body: Body) -> web.Response:
        channel = self._channel_or_404(request)
        self.typing.append((time.monotonic(), channel.id))
        return web.Response(status=204)

    # -- message state

    def _fill(
        self, message: MessageRecord, data: dict[str, Any], files: list[dict[str, Any]]
    ) -> None:
        message.content = data.get("content") or ""
        message.embeds = list(data.get("embeds") or [])
        message.components = list(data.get("components") or [])
        message.attachments = [self._attachment(message, f) for f in files]

    def _apply_edit(
        self, message: MessageRecord, data: dict[str, Any], files: list[dict[str, Any]], path: str
    ) -> None:
        content = data.get("content", message.content) or ""
        embeds = (data["embeds"] or []) if "embeds" in data else message.embeds
        components = (data["components"] or []) if "components" in data else message.components
        attachments = message.attachments
        if "attachments" in data:
            keep = {str(a.get("id")) for a in data["attachments"] or []}
            attachments = [a for a in attachments if a["id"] in keep]
        attachments = attachments + [self._attachment(message, f) for f in files]
        if not (content or embeds or components or attachments):
            raise ApiError(400, 50006, "Cannot send an empty message")
        message.content, message.embeds = content, list(embeds)
        message.components, message.attachments = list(components), attachments
        if "flags" in data and data["flags"] is not None:
            settable = FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2
            message.flags = (message.flags & ~settable) | (int(data["flags"]) & settable)
        message.flags &= ~FLAG_LOADING
        message.edited_at = dt.datetime.now(dt.UTC)
        message.snapshot()

    def _attachment(self, message: MessageRecord, upload: dict[str, Any]) -> dict[str, Any]:
        attachment_id = self.world.ids.next()
        name = upload["filename"]
        url = f"{self.base_url}/attachments/{message.channel.id}/{attachment_id}/{name}"
        return {
            "id": str(attachment_id),
            "filename": upload["filename"],
            "size": upload["size"],
            "url": url,
            "proxy_url": url,
            "content_type": upload.get("content_type"),
        }

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        content = self.attachment_files.get(request.match_info["attachment_id"])
        if content is None:
            return web.Response(status=404, text="Not Found")
        self.downloads.append(request.match_info["filename"])
        self._changed()
        return web.Response(body=content, content_type="application/octet-stream")

    async def _delete(self, message: MessageRecord) -> None:
        message.is_deleted = True
        message.snapshot()
        await self.gateway.broadcast_delete(message)
