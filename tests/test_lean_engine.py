"""What the lean engine (listen.engine: lean) adds to the contract the rest of the suite pins:
pipelining, slowloris and header limits, duplicate headers, a slow or breaking upstream,
never reusing an upstream connection whose answer did not provably end (user B must never
read user A's page), early answers with an unread body, long keep-alive connections."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from gateway.proxy.exchange import Addon, Exchange
from tests.harness import raw_http, run_gateway, serve_app
from tests.upstream_app import SEEN, create_upstream

LEAN = {"listen__engine": "lean"}


@pytest.fixture
async def upstream():
    app = create_upstream()
    async with serve_app(app) as url:
        yield url, app


class _Refuses(Addon):
    """Answers /refuse itself without reading the request body (as a login guard's 401 does)."""

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        if ex.path.path == "/refuse":
            return web.Response(status=401, text="no")
        return None


async def _connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length (the gateway's and the test upstreams')."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status, headers, body


def _get(path: str, port: int, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


async def test_pipelined_requests_are_answered_in_order(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(b"".join(_get(f"/echo?n={n}", gw.port) for n in range(5)))
        for n in range(5):
            status, _, body = await _read_answer(reader)
            assert status == 200 and json.loads(body)["raw_path"] == f"/echo?n={n}"
        writer.close()


async def test_headers_one_byte_at_a_time_within_the_deadline_pass(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        for byte in _get("/echo?slow=1", gw.port):
            writer.write(bytes([byte]))
            await writer.drain()
        status, _, body = await _read_answer(reader)
        assert status == 200 and json.loads(body)["raw_path"] == "/echo?slow=1"
        writer.close()


async def test_slowloris_head_gets_408_and_the_connection_closes(upstream):
    async with run_gateway(upstream[0], limits__header_timeout="0.4", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        request = _get("/echo", gw.port)
        try:
            for byte in request[:15]:  # a head trickling in, never finished
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:
            pass  # on a loaded machine the timeout may strike while it still trickles
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # the 408 was lost to the reset of a still-writing client
            answer = None
        if answer is not None:
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"/echo" not in answer
    assert not upstream[1][SEEN]  # nothing reached the upstream


@pytest.mark.parametrize("extra, status", [
    ("".join(f"X-H{n}: v\r\n" for n in range(120)), 431),
    ("X-Big: " + "a" * 9000 + "\r\n", 431),
])
async def test_header_count_and_size_limits(upstream, extra, status):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/echo", gw.port, extra))
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"X-Big" not in answer
    assert not upstream[1][SEEN]


@pytest.mark.parametrize("extra", ["Host: other.example\r\n", "Content-Length: 0\r\nContent-Length: 0\r\n"])
async def test_duplicate_host_or_content_length_is_refused(upstream, extra):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/echo", gw.port, extra))
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"other.example" not in answer
    assert not upstream[1][SEEN]


async def test_two_cookie_headers_both_reach_the_upstream(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/echo", gw.port, "Cookie: a=1\r\nCookie: b=2\r\n"))
        status, _, body = await _read_answer(reader)
        cookies = [v for k, v in json.loads(body)["headers"] if k.lower() == "cookie"]
        assert status == 200 and "a=1" in "; ".join(cookies) and "b=2" in "; ".join(cookies)


async def test_slow_upstream_gives_504_and_the_next_request_works(upstream):
    async with run_gateway(upstream[0], upstream__read_timeout="0.3", upstream__pool_size="1", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/slow?s=2", gw.port))
        status, _, _ = await _read_answer(reader)
        assert status == 504
        writer.write(_get("/echo?after=1", gw.port))
        status, _, body = await _read_answer(reader)
        assert status == 200 and json.loads(body)["raw_path"] == "/echo?after=1"


# -- a misbehaving upstream, for the pool's safety ---------------------------------------------

class RawUpstream:
    """A PMS on raw sockets: answers by path, records which connection each request used.

    /user?name=X answers "page of X" (framed); the hostile paths end their answers in ways
    after which the connection must not carry another user's request."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[int, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ")[:2]
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                path = target.decode()
                self.requests.append((conn, path))
                if not await self.answer(method.decode(), path, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def answer(self, method: str, path: str, writer: asyncio.StreamWriter) -> bool:
        def page(text: str) -> bytes:
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b" % (len(text), text.encode())

        if path.startswith("/user?name="):
            writer.write(page("page of " + path.split("=", 1)[1]))
        elif path == "/head-with-body":  # a HEAD answered with a body anyway
            writer.write(page("page of A") if method == "HEAD" else page("x"))
        elif path == "/extra":  # one answer, then a second nobody asked for
            writer.write(page("page of A") + page("page of A, again"))
        elif path == "/hints":  # 103 Early Hints before the answer
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + page("page of A"))
        elif path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npage of A")
            await writer.drain()
            return False
        elif path == "/cut":  # promises more than it sends, then closes
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"A" * 70000)
            await writer.drain()
            return False
        elif path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
            for _ in range(20):
                writer.write(b"A" * 100000)
                await writer.drain()
        else:
            writer.write(page("unknown"))
        await writer.drain()
        return True


@pytest.fixture
async def raw_upstream():
    pms = RawUpstream()
    server = await asyncio.start_server(pms.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield pms, f"http://127.0.0.1:{port}"
    server.close()


async def _fetch(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await _connect(port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("hostile", ["/head-with-body", "/extra", "/hints", "/until-close", "/cut"])
async def test_user_b_never_reads_user_a_page_over_a_pool_of_one(raw_upstream, hostile):
    pms, url = raw_upstream
    async with run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        for round_ in range(3):
            method = "HEAD" if hostile == "/head-with-body" else "GET"
            await _fetch(gw.port, hostile, method)  # user A
            status, body = await _fetch(gw.port, f"/user?name=B{round_}")  # user B, interleaved
            assert status == 200 and body == f"page of B{round_}".encode()
            assert b"page of A" not in body
    # each hostile answer retired its connection: the request after it went on a fresh one
    assert len(pms.requests) == 6
    for (conn_a, path_a), (conn_b, _) in zip(pms.requests, pms.requests[1:]):
        assert path_a != hostile or conn_b != conn_a


async def test_framed_answers_do_reuse_the_connection(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        for n in range(4):
            status, body = await _fetch(gw.port, f"/user?name=U{n}")
            assert body == f"page of U{n}".encode()
    assert pms.connections == 1


async def test_upstream_closing_mid_body_cuts_the_answer(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, **LEAN) as gw:
        status, body = await _fetch(gw.port, "/cut")
        assert status == 200 and len(body) < 100000  # the browser sees a cut answer, not a whole one
        status, body = await _fetch(gw.port, "/user?name=next")
        assert body == b"page of next"


async def test_browser_leaving_mid_answer_retires_the_upstream_connection(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/big", gw.port))
        await reader.readexactly(1000)
        writer.transport.abort()  # a partial body: the rest of the answer is still on the wire
        await asyncio.sleep(0.2)
        status, body = await _fetch(gw.port, "/user?name=B")
        assert body == b"page of B"
    assert [path for _, path in pms.requests] == ["/big", "/user?name=B"]
    assert pms.requests[0][0] != pms.requests[1][0]


async def test_early_answer_with_unread_body_never_parses_the_body_as_a_request(upstream):
    smuggled = _get("/smuggled", 0)
    body = smuggled + b"x" * (300_000 - len(smuggled))
    async with run_gateway(upstream[0], addons=[_Refuses()], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(
            f"POST /refuse HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body + _get("/echo?next=1", gw.port)
        )
        status, _, _ = await _read_answer(reader)
        assert status == 401
        try:
            status, _, answer = await _read_answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # closed instead of drained: also safe
        else:
            assert status == 200 and json.loads(answer)["raw_path"] == "/echo?next=1"
        writer.close()
    assert not any("smuggled" in str(seen) for seen in upstream[1][SEEN])


async def test_ten_thousand_keep_alive_requests_on_one_connection(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        request = _get("/_gateway/health", gw.port)  # the engine's own round trip, no upstream: a fast test
        for _ in range(100):
            writer.write(request * 100)
            for _ in range(100):
                status, _, body = await _read_answer(reader)
                assert status == 200 and body == b'{"status": "ok"}'
        writer.close()


# -- parity with the aiohttp engine (found by an attack pass) ------------------------------------

ENGINES = ["aiohttp", "lean"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("body", [
    b"5\nhello\n0\n\n",  # bare LF after the chunk size
    b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",  # a chunk size past 64 bits
    b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",  # framing in a trailer
], ids=["bare-lf", "oversize", "length-trailer"])
async def test_malformed_chunked_body_gets_400_and_nothing_goes_upstream(raw_upstream, engine, body):
    pms, url = raw_upstream
    async with run_gateway(url, listen__engine=engine) as gw:
        answer = await raw_http(gw.port, (
            f"POST /user?name=secret-marker HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode() + body)
    assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:80]
    assert b"secret-marker" not in answer and b"hello" not in answer  # the request is never echoed
    assert pms.requests == []


@pytest.mark.parametrize("engine", ENGINES)
async def test_forwarded_answer_gets_date_and_server_like_aiohttp(raw_upstream, engine):
    _, url = raw_upstream  # its answers carry neither Date nor Server
    async with run_gateway(url, listen__engine=engine) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(_get("/user?name=B", gw.port))
        status, headers, body = await _read_answer(reader)
        writer.close()
    assert status == 200 and body == b"page of B"
    sent = parsedate_to_datetime(headers["date"])
    assert abs((sent - datetime.now(timezone.utc)).total_seconds()) < 60
    assert headers["server"] == SERVER_SOFTWARE


@pytest.mark.parametrize("engine", ENGINES)
async def test_http10_keep_alive_is_kept_alive_and_plain_http10_closed(raw_upstream, engine):
    pms, url = raw_upstream
    async with run_gateway(url, listen__engine=engine) as gw:
        reader, writer = await _connect(gw.port)
        host = f"Host: 127.0.0.1:{gw.port}\r\n"
        for name in ("A", "B"):
            writer.write(f"GET /user?name={name} HTTP/1.0\r\n{host}Connection: keep-alive\r\n\r\n".encode())
            status, headers, body = await _read_answer(reader)
            assert status == 200 and body == f"page of {name}".encode()
            assert headers["connection"].lower() == "keep-alive"
        writer.write(f"GET /user?name=C HTTP/1.0\r\n{host}\r\n".encode())
        status, _, body = await _read_answer(reader)
        assert body == b"page of C"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no keep-alive asked: closed
        writer.close()
    assert [path for _, path in pms.requests] == ["/user?name=A", "/user?name=B", "/user?name=C"]
