"""The fake Discord gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .discord_state import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    DiscordWorld,
    FakeGuild,
    MessageRecord,
)
from .discord_wire import json_dumps, json_response, make_encoder

_COMPRESSIONS = (None, "zlib-stream", "zstd-stream")


@dataclass(eq=False)
class GatewaySession:
    """One identified gateway session; survives reconnects so RESUME can replay events."""

    session_id: str
    intents: int
    shard: tuple[int, int]
    compress: str | None
    seq: int = 0
    num_heartbeats: int = 0
    num_resumes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None

    def handles_guild(self, guild_id: int) -> bool:
        shard_id, num_shards = self.shard
        return (guild_id >> 22) % num_shards == shard_id

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.events.append(payload)
        if self.connection is not None:
            await self.connection.send(payload)


class GatewayConnection:
    """One WebSocket; compression context and a lock so frames leave in compression order."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self._encode = make_encoder(compress)
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            if self.ws.closed:
                return
            frame = self._encode(json_dumps(payload))
            with contextlib.suppress(ConnectionError):
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)


class FakeGateway:
    """Serves gateway WebSockets and dispatches events to identified sessions."""

    def __init__(
        self,
        world: DiscordWorld,
        *,
        token: str,
        heartbeat_interval: float,
        url: Callable[[], str],
        on_change: Callable[[], None],
    ) -> None:
        self._world = world
        self._token = token
        self._heartbeat_ms = int(heartbeat_interval * 1000)
        self._url = url
        self._on_change = on_change
        self.sessions: list[GatewaySession] = []
        self._connections: set[GatewayConnection] = set()
        self._session_numbers = itertools.count(1)

    # -- targets

    def ready_sessions(self, guild_id: int | None = None) -> list[GatewaySession]:
        """Connected sessions (for a guild: those whose shard handles it)."""
        return [
            s
            for s in self.sessions
            if s.connection is not None and (guild_id is None or s.handles_guild(guild_id))
        ]

    def interaction_session(self, guild: FakeGuild | None) -> GatewaySession:
        """The session an interaction goes to (DMs go to shard 0, as on Discord)."""
        candidates = self.ready_sessions(guild.id if guild else None)
        if guild is None:
            candidates = [s for s in candidates if s.shard[0] == 0] or candidates
        if not candidates:
            raise RuntimeError("no connected gateway session; is the client running?")
        return candidates[-1]

    # -- dispatch helpers

    async def broadcast_message(self, event: str, message: MessageRecord) -> None:
        """MESSAGE_CREATE/UPDATE to sessions with the right intent; ephemeral ones stay private."""
        if message.is_ephemeral:
            return
        for session in self._message_sessions(message):
            # The rule applies to the replied-to message inside it too.
            hides = functools.partial(self._hides_content, session)
            await session.dispatch(
                event, message.to_json(app_id=self._world.application_id, hides=hides)
            )

    async def broadcast_delete(self, message: MessageRecord) -> None:
        if message.is_ephemeral:
            return
        data = {"id": str(message.id), "channel_id": str(message.channel.id)}
        if message.channel.guild_id:
            data["guild_id"] = str(message.channel.guild_id)
        for session in self._message_sessions(message):
            await session.dispatch("MESSAGE_DELETE", data)

    async def guild_joined(self, guild: FakeGuild) -> None:
        for session in self.ready_sessions(guild.id):
            if session.intents & INTENT_GUILDS:
                await session.dispatch("GUILD_CREATE", self._guild_create(guild, session))

    async def reconnect_all(self) -> None:
        """Sends op 7 RECONNECT on every connection; discord.py then RESUMEs."""
        for conn in list(self._connections):
            await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def close(self) -> None:
        for conn in list(self._connections):
            await conn.ws.close(code=1001, message=b"fake server shutting down")

    def _message_sessions(self, message: MessageRecord) -> list[GatewaySession]:
        needed = INTENT_DIRECT_MESSAGES if message.channel.is_dm else INTENT_GUILD_MESSAGES
        guild_id = message.channel.guild_id
        return [
            s
            for s in self.sessions
            if s.intents & needed and (guild_id is None or s.handles_guild(guild_id))
        ]

    def _hides_content(self, session: GatewaySession, message: MessageRecord) -> bool:
        """Without MESSAGE_CONTENT, guild messages arrive empty unless by or mentioning the bot."""
        bot = self._world.bot
        return not (
            session.intents & INTENT_MESSAGE_CONTENT
            or message.channel.is_dm
            or message.author is bot
            or bot in message.mentions
        )

    # -- the WebSocket endpoint

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /gateway?v=10&encoding=json[&compress=zlib-stream|zstd-stream]."""
        compress = request.query.get("compress")
        if request.query.get("encoding", "json") != "json" or compress not in _COMPRESSIONS:
            return json_response({"message": "unsupported encoding/compress"}, status=400)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, compress)
        self._connections.add(conn)
        session: GatewaySession | None = None
        try:
            hello = {"heartbeat_interval": self._heartbeat_ms}
            await conn.send({"op": 10, "s": None, "t": None, "d": hello})
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                session = await self._on_op(conn, session, compress, json.loads(msg.data))
                self._on_change()
        finally:
            self._connections.discard(conn)
            if session is not None and session.connection is conn:
                session.connection = None
            self._on_change()
        return ws

    async def _on_op(
        self,
        conn: GatewayConnection,
        session: GatewaySession | None,
        compress: str | None,
        payload: dict[str, Any],
    ) -> GatewaySession | None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            if session is not None:
                session.num_heartbeats += 1
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            return await self._identify(conn, compress, data or {})
        elif op == 6:
            return await self._resume(conn, data or {})
        elif session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
        elif op == 8:
            await self._send_member_chunk(session, data or {})
        elif op not in (3, 4):
            await conn.ws.close(code=4001, message=b"Unknown opcode.")
        return session

    async def _identify(
        self, conn: GatewayConnection, compress: str | None, data: dict[str, Any]
    ) -> GatewaySession | None:
        if data.get("token") != self._token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = data.get("intents")
        if not isinstance(intents, int) or intents >= 1 << 26:
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & PRIVILEGED_INTENTS & ~self._world.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_id, num_shards = data.get("shard") or (0, 1)
        session = GatewaySession(
            f"fake-session-{next(self._session_numbers)}",
            intents,
            (int(shard_id), int(num_shards)),
            compress,
            connection=conn,
        )
        self.sessions.append(session)
        guilds = [g for g in self._world.guilds if session.handles_guild(g.id)]
        await session.dispatch("READY", self._ready(session, guilds))
        if intents & INTENT_GUILDS:
            for guild in guilds:
                await session.dispatch("GUILD_CREATE", self._guild_create(guild, session))
        return session

    def _ready(self, session: GatewaySession, guilds: list[FakeGuild]) -> dict[str, Any]:
        world = self._world
        return {
            "v": 10,
            "user": world.bot_user_json(),
            "session_id": session.session_id,
            "resume_gateway_url": self._url(),
            "session_type": "normal",
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "application": {"id": str(world.application_id), "flags": world.app_flags()},
            "shard": list(session.shard),
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": ["local"],
            "_trace": ["fake-discord"],
        }

    async def _resume(self, conn: GatewayConnection, data: dict[str, Any]) -> GatewaySession | None:
        session = next((s for s in self.sessions if s.session_id == data.get("session_id")), None)
        if session is None or data.get("token") != self._token:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return None
        session.connection = conn
        session.num_resumes += 1
        last_seen = data.get("seq") or 0
        for event in [e for e in session.events if e["s"] > last_seen]:
            await conn.send(event)
        await session.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        return session

    async def _send_member_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        wanted = str(data.get("guild_id"))
        guild = next((g for g in self._world.guilds if str(g.id) == wanted), None)
        if guild is None:
            return
        chunk = {
            "guild_id": str(guild.id),
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "members": [guild.member_json(u) for u in guild.members.values()],
            "nonce": data.get("nonce"),
        }
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    @staticmethod
    def _guild_create(guild: FakeGuild, session: GatewaySession) -> dict[str, Any]:
        return guild.to_json(with_members=bool(session.intents & INTENT_GUILD_MEMBERS))
