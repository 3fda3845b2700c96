"""The fake forward proxy, driven by aiohttp as the Discord front-end drives it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from .http_proxy import HttpProxy


class Upstream:
    """A loopback web server that says what reached it (plain, or TLS with a test cert)."""

    def __init__(self, server_ssl: ssl.SSLContext | None = None) -> None:
        self.seen: list[dict[str, object]] = []
        self._ssl = server_ssl
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.seen.append({"headers": dict(request.headers), "body": body})
        return web.json_response({"method": request.method, "path": request.path_qs, "body": body})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"echo: {msg.data}")
        return ws


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl tool)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key)),
            *("-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_forwards_requests_over_one_kept_alive_connection(upstream: Upstream) -> None:
    async with (
        HttpProxy() as proxy,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
    ):
        base = f"http://{upstream.authority}"
        async with session.get(f"{base}/echo?x=1", proxy=proxy.url) as got:
            assert await got.json() == {"method": "GET", "path": "/echo?x=1", "body": ""}
        async with session.post(f"{base}/echo", json={"a": 1}, proxy=proxy.url) as posted:
            assert (await posted.json())["body"] == '{"a": 1}'
        async with session.get(f"{base}/stream", proxy=proxy.url) as streamed:
            assert await streamed.read() == b"one two three"  # a chunked answer
    assert [(r.method, r.target, r.path, r.status) for r in proxy.records] == [
        ("GET", upstream.authority, "/echo?x=1", 200),
        ("POST", upstream.authority, "/echo", 200),
        ("GET", upstream.authority, "/stream", 200),
    ]
    assert proxy.num_connections == 1
    assert upstream.seen[0]["headers"]["Host"] == upstream.authority  # type: ignore[index]


async def test_forwards_a_chunked_request_body(upstream: Upstream) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"alpha ", b"beta ", b"gamma"):
            yield part

    async with HttpProxy() as proxy, aiohttp.ClientSession() as session:
        url = f"http://{upstream.authority}/echo"
        async with session.post(url, data=parts(), proxy=proxy.url) as response:
            assert (await response.json())["body"] == "alpha beta gamma"
    assert upstream.seen[0]["headers"]["Content-Length"] == "16"  # type: ignore[index]


async def test_carries_a_plain_websocket_upgrade(upstream: Upstream) -> None:
    # aiohttp asks for ws:// in absolute form (GET ws://host/ws + Upgrade), not with CONNECT.
    async with (
        HttpProxy() as proxy,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://{upstream.authority}/ws", proxy=proxy.url) as ws,
    ):
        await ws.send_str("hi")
        assert await ws.receive_str() == "echo: hi"
    [record] = proxy.records
    assert (record.method, record.path, record.status) == ("GET", "/ws", 101)
    assert record.is_upgrade


async def test_tunnels_https_and_wss_with_connect(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    client_ssl = ssl.create_default_context(cafile=str(cert))
    async with (
        Upstream(server_ssl) as tls_upstream,
        HttpProxy() as proxy,
        # force_close: the websocket gets a tunnel of its own instead of the POST's.
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
        ) as session,
    ):
        base = tls_upstream.authority
        async with session.post(f"https://{base}/echo", data=b"sealed", proxy=proxy.url) as got:
            assert (await got.json())["body"] == "sealed"
        async with session.ws_connect(f"wss://{base}/ws", proxy=proxy.url) as ws:
            await ws.send_str("hi")
            assert await ws.receive_str() == "echo: hi"
    assert [(r.method, r.target, r.path, r.status) for r in proxy.records] == [
        ("CONNECT", tls_upstream.authority, None, 200),
        ("CONNECT", tls_upstream.authority, None, 200),
    ]


async def test_a_raw_connect_tunnel_pipes_bytes_both_ways(upstream: Upstream) -> None:
    async with HttpProxy() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"CONNECT {upstream.authority} HTTP/1.1\r\n\r\n".encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()  # until the server closes: the tunnel closes with it
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'"body": ""}')


async def test_demands_the_configured_credentials(upstream: Upstream) -> None:
    async with HttpProxy(auth=("user", "p@ss word")) as proxy, aiohttp.ClientSession() as session:
        url = f"http://{upstream.authority}/echo"
        async with session.get(url, proxy=proxy.url) as missing:
            assert missing.status == 407
            assert missing.headers["Proxy-Authenticate"].startswith("Basic")
        async with session.get(url, proxy=proxy.url_with("user", "wrong")) as wrong:
            assert wrong.status == 407
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await session.get(f"https://{upstream.authority}/", proxy=proxy.url)
        assert refused.value.status == 407
        async with session.get(url, proxy=proxy.url_with("user", "p@ss word")) as right:
            assert right.status == 200
    assert [(r.method, r.credentials, r.status) for r in proxy.records] == [
        ("GET", None, 407),
        ("GET", "user:wrong", 407),
        ("CONNECT", None, 407),
        ("GET", "user:p@ss word", 200),
    ]
    assert "Proxy-Authorization" not in upstream.seen[0]["headers"]  # type: ignore[operator]


async def test_refuses_what_it_cannot_forward(upstream: Upstream) -> None:
    async with HttpProxy() as proxy, aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/echo") as direct:  # origin form: not a proxy request
            assert direct.status == 400
        async with session.get("http://127.0.0.1:1/", proxy=proxy.url) as unreachable:
            assert unreachable.status == 502
    assert [r.status for r in proxy.records] == [400, 502]
