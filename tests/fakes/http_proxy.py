"""A forward HTTP proxy on 127.0.0.1 for tests, recording every request and tunnel it carries.

The two ways clients use an HTTP proxy: absolute form (`GET http://host:port/path HTTP/1.1`,
httpx's and aiohttp's way for http:// URLs) is forwarded in origin form and the answer relayed,
on a kept-alive client connection; `CONNECT host:port` (their way for https:// and wss://) gets
`200 Connection established`, then bytes are piped both ways until either side closes.

aiohttp sends a *plain* ws:// websocket in absolute form too (`GET ws://host/path` plus
`Upgrade: websocket`), which is how the fake Discord gateway is reached: it is forwarded and,
after `101`, piped like a tunnel. Squid 5+ relays such upgrades for http:// targets when allowed
(http_upgrade_request_protocols), but squid and tinyproxy refuse a ws:// target; Discord's own
gateway is wss://, which aiohttp tunnels with CONNECT, the way real proxies carry it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlsplit

Headers = list[tuple[str, str]]

# Meaningful for one connection only (RFC 9110 7.6.1), as are Proxy-*: never passed on as is.
HOP_BY_HOP = {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
FORWARDED_SCHEMES = {"http": 80, "ws": 80}


@dataclass
class ProxiedRequest:
    """One request or tunnel as the proxy saw it."""

    method: str  # "GET", "POST", ... or "CONNECT"
    target: str  # "host:port" the client asked for
    path: str | None  # origin form ("/a/b?c=1") of a forwarded request; None for CONNECT
    credentials: str | None  # "user:password" of a Basic Proxy-Authorization header
    is_upgrade: bool = False  # asked to switch protocols (a websocket)
    # Upstream's status, 200 for a tunnel, or the proxy's own refusal; None while waiting for
    # an answer, or if the client gave up first (a long poll cancelled at shutdown).
    status: int | None = None


class _ClientReader(asyncio.StreamReader):
    """A StreamReader that tells when the client has closed its side (it gave up)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.closed.set()


class HttpProxy:
    """Forward proxy on a free loopback port; `auth=(user, password)` makes it demand them."""

    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        self.records: list[ProxiedRequest] = []
        self.port = 0
        self.num_connections = 0  # client connections accepted (keep-alive reuses them)
        self._credentials = ":".join(auth) if auth else None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: asyncio.StreamReaderProtocol(_ClientReader(), self._serve_client),
            "127.0.0.1",
            0,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):  # long polls and tunnels end with the proxy
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy URL carrying credentials, as a config file would write it."""
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    async def _serve_client(self, reader: _ClientReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.num_connections += 1
        try:
            while await self._serve_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client or server went away mid-message
        except asyncio.CancelledError:
            pass  # the proxy is closing (a cancelled handler would be logged as an error)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_request(self, reader: _ClientReader, writer: asyncio.StreamWriter) -> bool:
        """Serves one request; returns whether the client connection stays open."""
        head = await _read_head(reader)
        if head is None:
            return False
        start_line, headers = head
        method, target, version = [*start_line.split(" "), "", ""][:3]
        record = ProxiedRequest(method, target, None, _basic_credentials(headers))
        self.records.append(record)
        body = None if method == "CONNECT" else await _read_body(reader, headers)
        if self._credentials is not None and record.credentials != self._credentials:
            return _refuse(record, writer, 407, "Proxy Authentication Required")
        if method == "CONNECT":
            return await self._tunnel(record, reader, writer)
        url = urlsplit(target)
        if url.scheme not in FORWARDED_SCHEMES or not url.hostname or not version:
            return _refuse(record, writer, 400, "Bad Request")  # origin form: not for a proxy
        port = url.port or FORWARDED_SCHEMES[url.scheme]
        record.target = f"{url.hostname}:{port}"
        record.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        record.is_upgrade = _get(headers, "upgrade") != ""
        try:
            up_reader, up_writer = await asyncio.open_connection(url.hostname, port)
        except OSError:
            return _refuse(record, writer, 502, "Bad Gateway")
        try:
            up_writer.write(_upstream_request(method, record, headers, url.netloc, body))
            await up_writer.drain()
            upstream = (up_reader, up_writer)
            relay = self._relay_response(record, method, headers, (reader, writer), upstream)
            # A client that gives up (a cancelled long poll) ends the upstream request too, as
            # real proxies do; otherwise the server would go on holding it.
            return await _unless_gone(reader, relay)
        finally:
            up_writer.close()

    async def _tunnel(
        self, record: ProxiedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        host, _, port = record.target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            return _refuse(record, writer, 502, "Bad Gateway")
        record.status = 200
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await _pipe_both((reader, writer), (up_reader, up_writer))
        finally:
            up_writer.close()
        return False

    async def _relay_response(
        self,
        record: ProxiedRequest,
        method: str,
        request_headers: Headers,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        up_reader = upstream[0]
        head = await _read_head(up_reader)
        if head is None:
            raise ConnectionResetError("upstream closed before answering")
        status_line, headers = head
        record.status = int(status_line.split(" ")[1])
        writer = client[1]
        if record.is_upgrade and record.status == 101:
            writer.write(_head_bytes(status_line, headers))
            await _pipe_both(client, upstream)
            return False
        # Upstream closes after its answer (it was asked to): relayed to its end, the body keeps
        # its own framing, and a body that only the close delimits ends this connection too.
        has_body = method != "HEAD" and record.status >= 200 and record.status not in (204, 304)
        framing = _get(headers, "content-length") or _get(headers, "transfer-encoding")
        is_delimited = not has_body or framing != ""
        kept = [(k, v) for k, v in headers if not _is_hop(k)]
        if "chunked" in _get(headers, "transfer-encoding").lower():
            kept.append(("Transfer-Encoding", "chunked"))
        if not is_delimited:
            kept.append(("Connection", "close"))
        writer.write(_head_bytes(status_line, kept))
        while data := await up_reader.read(65536):
            writer.write(data)
            await writer.drain()
        wants_close = "close" in _get(request_headers, "connection").lower()
        return is_delimited and not wants_close and not record.is_upgrade


def _refuse(record: ProxiedRequest, writer: asyncio.StreamWriter, status: int, reason: str) -> bool:
    record.status = status
    extra = "Proxy-Authenticate: Basic realm=fake-proxy\r\n" if status == 407 else ""
    head = f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    writer.write(head.encode())
    return False


def _is_hop(name: str, also: set[str] | frozenset[str] = frozenset()) -> bool:
    name = name.lower()
    return name in HOP_BY_HOP or name in also or name.startswith("proxy-")


def _get(headers: Headers, name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def _basic_credentials(headers: Headers) -> str | None:
    scheme, _, token = _get(headers, "proxy-authorization").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, Headers] | None:
    """The start line and headers of a message; None if the peer closed before one."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise
    start_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    return start_line, headers


async def _read_body(reader: asyncio.StreamReader, headers: Headers) -> bytes | None:
    """A request body, de-chunked if it came chunked; None if it has none."""
    if "chunked" in _get(headers, "transfer-encoding").lower():
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
        return b"".join(parts)
    length = _get(headers, "content-length")
    return await reader.readexactly(int(length)) if length else None


def _upstream_request(
    method: str, record: ProxiedRequest, headers: Headers, authority: str, body: bytes | None
) -> bytes:
    """The request in origin form, with this hop's headers replaced (RFC 9112 3.2.2: the
    target's authority is the Host); one upstream connection per request."""
    named = {n.strip().lower() for n in _get(headers, "connection").split(",")}
    kept = [(k, v) for k, v in headers if not _is_hop(k, named | {"host"})]
    kept.insert(0, ("Host", authority.rpartition("@")[2]))
    if record.is_upgrade:
        kept += [("Connection", "Upgrade"), ("Upgrade", _get(headers, "upgrade"))]
    else:
        kept.append(("Connection", "close"))
    if body is not None:
        kept = [(k, v) for k, v in kept if k.lower() != "content-length"]
        kept.append(("Content-Length", str(len(body))))
    return _head_bytes(f"{method} {record.path} HTTP/1.1", kept) + (body or b"")


def _head_bytes(start_line: str, headers: Headers) -> bytes:
    lines = [start_line, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _unless_gone(reader: _ClientReader, work: Coroutine[Any, Any, bool]) -> bool:
    """Runs `work` until the client closes its side; returns False if it went first."""
    task = asyncio.create_task(work)
    gone = asyncio.create_task(reader.closed.wait())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return not task.cancelled() and task.result()


async def _pipe_both(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copies bytes both ways until either side closes."""

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

    tasks = [asyncio.create_task(copy(a[0], b[1])), asyncio.create_task(copy(b[0], a[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
