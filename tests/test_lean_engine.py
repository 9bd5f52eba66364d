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
from tests.security.raw_pms import fetch, get, raw_pms, read_answer
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


async def test_pipelined_requests_are_answered_in_order(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(b"".join(get(f"/echo?n={n}", gw.port) for n in range(5)))
        for n in range(5):
            status, _, body = await read_answer(reader)
            assert status == 200 and json.loads(body)["raw_path"] == f"/echo?n={n}"
        writer.close()


async def test_headers_one_byte_at_a_time_within_the_deadline_pass(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        for byte in get("/echo?slow=1", gw.port):
            writer.write(bytes([byte]))
            await writer.drain()
        status, _, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["raw_path"] == "/echo?slow=1"
        writer.close()


async def test_slowloris_head_gets_408_and_the_connection_closes(upstream):
    async with run_gateway(upstream[0], limits__header_timeout="0.4", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        request = get("/echo", gw.port)
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
        writer.write(get("/echo", gw.port, extra))
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"X-Big" not in answer
    assert not upstream[1][SEEN]


@pytest.mark.parametrize("extra", ["Host: other.example\r\n", "Content-Length: 0\r\nContent-Length: 0\r\n"])
async def test_duplicate_host_or_content_length_is_refused(upstream, extra):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(get("/echo", gw.port, extra))
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"other.example" not in answer
    assert not upstream[1][SEEN]


async def test_two_cookie_headers_both_reach_the_upstream(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(get("/echo", gw.port, "Cookie: a=1\r\nCookie: b=2\r\n"))
        status, _, body = await read_answer(reader)
        cookies = [v for k, v in json.loads(body)["headers"] if k.lower() == "cookie"]
        assert status == 200 and "a=1" in "; ".join(cookies) and "b=2" in "; ".join(cookies)


async def test_slow_upstream_gives_504_and_the_next_request_works(upstream):
    async with run_gateway(upstream[0], upstream__read_timeout="0.3", upstream__pool_size="1", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(get("/slow?s=2", gw.port))
        status, _, _ = await read_answer(reader)
        assert status == 504
        writer.write(get("/echo?after=1", gw.port))
        status, _, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["raw_path"] == "/echo?after=1"


# -- a misbehaving upstream, for the pool's safety (more in tests/security/test_attack3_pool.py) --

@pytest.fixture
async def raw_upstream():
    async with raw_pms() as (pms, url):
        yield pms, url


async def test_framed_answers_do_reuse_the_connection(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        for n in range(4):
            status, _, body = await fetch(gw.port, f"/user?name=U{n}")
            assert body == f"page of U{n}".encode()
    assert pms.connections == 1


async def test_upstream_closing_mid_body_cuts_the_answer(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, **LEAN) as gw:
        status, _, body = await fetch(gw.port, "/cut")
        assert status == 200 and len(body) < 100000  # the browser sees a cut answer, not a whole one
        status, _, body = await fetch(gw.port, "/user?name=next")
        assert body == b"page of next"


async def test_browser_leaving_mid_answer_retires_the_upstream_connection(raw_upstream):
    pms, url = raw_upstream
    async with run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(get("/big", gw.port))
        await reader.readexactly(1000)
        writer.transport.abort()  # a partial body: the rest of the answer is still on the wire
        status, _, body = await fetch(gw.port, "/user?name=B")
        assert body == b"page of B"
    assert pms.paths() == ["/big", "/user?name=B"]
    assert pms.requests[0][0] != pms.requests[1][0]


async def test_early_answer_with_unread_body_never_parses_the_body_as_a_request(upstream):
    smuggled = get("/smuggled", 0)
    body = smuggled + b"x" * (300_000 - len(smuggled))
    async with run_gateway(upstream[0], addons=[_Refuses()], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        writer.write(
            f"POST /refuse HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body + get("/echo?next=1", gw.port)
        )
        status, _, _ = await read_answer(reader)
        assert status == 401
        try:
            status, _, answer = await read_answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # closed instead of drained: also safe
        else:
            assert status == 200 and json.loads(answer)["raw_path"] == "/echo?next=1"
        writer.close()
    assert not any("smuggled" in str(seen) for seen in upstream[1][SEEN])


async def test_ten_thousand_keep_alive_requests_on_one_connection(upstream):
    async with run_gateway(upstream[0], **LEAN) as gw:
        reader, writer = await _connect(gw.port)
        request = get("/_gateway/health", gw.port)  # the engine's own round trip, no upstream: a fast test
        for _ in range(100):
            writer.write(request * 100)
            for _ in range(100):
                status, _, body = await read_answer(reader)
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
        writer.write(get("/user?name=B", gw.port))
        status, headers, body = await read_answer(reader)
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
            status, headers, body = await read_answer(reader)
            assert status == 200 and body == f"page of {name}".encode()
            assert headers["connection"].lower() == "keep-alive"
        writer.write(f"GET /user?name=C HTTP/1.0\r\n{host}\r\n".encode())
        status, _, body = await read_answer(reader)
        assert body == b"page of C"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no keep-alive asked: closed
        writer.close()
    assert pms.paths() == ["/user?name=A", "/user?name=B", "/user?name=C"]
