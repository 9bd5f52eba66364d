"""Attack on the upstream pool of both engines (issue 14, third attack pass; found on the lean
engine, then closed on the aiohttp engine too).

User B must never receive a byte meant for user A, and a request must never leave the pool
poorer: every kind of odd answer retires its connection, a timeout or an error gives the
slot back, an answer the browser was already receiving is never followed by a second one,
and a POST is never sent twice.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from gateway.proxy.exchange import Addon, Exchange
from tests.harness import run_gateway
from tests.security.raw_pms import fetch, get, page, raw_pms

LEAN = {"listen__engine": "lean"}
ENGINES = ["aiohttp", "lean"]

RETIRING = [
    "/head-with-body",  # HEAD: llhttp cannot be told the answer has no body
    "/extra",  # a second answer nobody asked for, in the same packet
    "/hints",  # a 1xx before the answer
    "/until-close",  # no framing: the answer ends when the connection does
    "/cut",  # closed mid-body
    "/204-body",  # a body after a 204
    "/304-body",  # a whole second answer after a 304
    "/longer",  # more bytes than Content-Length said
    "/xchunked",  # Transfer-Encoding not ending in chunked: read until close, never framed
    "/status-0",  # not a status
    "/big-field",  # a header field over the answer's field limit
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("hostile", RETIRING)
async def test_user_b_never_reads_user_a_page_over_a_pool_of_one(hostile, engine):
    async with raw_pms() as (pms, url), run_gateway(url, upstream__pool_size="1", listen__engine=engine) as gw:
        for round_ in range(2):
            await fetch(gw.port, hostile, "HEAD" if hostile == "/head-with-body" else "GET")  # user A
            status, _, body = await fetch(gw.port, f"/user?name=B{round_}")  # user B, interleaved
            assert status == 200 and body == f"page of B{round_}".encode()
    # each hostile answer retired its connection: the request after it went on a fresh one
    assert len(pms.requests) == 4
    for (conn_a, _, path_a), (conn_b, _, _) in zip(pms.requests, pms.requests[1:]):
        assert path_a != hostile or conn_b != conn_a


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_answer_that_stalls_gives_its_pool_slot_back(engine):
    """Before: the answer's connection was never released when reading its body timed out
    (or anything else failed between forward and relay): with a pool of one, every later
    request waited for the slot and got 504, for good."""
    async with raw_pms() as (pms, url), run_gateway(url, upstream__pool_size="1", upstream__read_timeout="0.3",
                                                    listen__engine=engine) as gw:
        for _ in range(2):
            status, _, _ = await fetch(gw.port, "/stall")  # a head promising 10 bytes, then silence
            assert status == 504
        status, _, body = await fetch(gw.port, "/user?name=B")
        assert status == 200 and body == b"page of B"
    assert pms.connections == 3


@pytest.mark.parametrize("engine", ENGINES)
async def test_request_timeout_mid_answer_never_writes_a_second_answer(engine):
    """Before: request_timeout striking while an answer streamed made the gateway write a
    504 into the middle of the 200's body, on a connection it then kept open: the browser
    (or a proxy in front) read the 504 as body bytes and the rest as the next answer."""
    async with raw_pms() as (_, url), run_gateway(url, limits__request_timeout="0.5", upstream__read_timeout="30",
                                                  listen__engine=engine) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/slowbig", gw.port))  # keep-alive: only the gateway closing ends the read
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", data)) == 1 and data.startswith(b"HTTP/1.1 200 ")
    assert b"504" not in data and len(data) < 1_000_000  # a cut answer, and nothing after it


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [100, 300_000], ids=["read-whole", "streamed"])
async def test_a_body_the_pms_never_read_never_prefixes_the_next_users_request(size, engine):
    """A "CL.0" PMS answers without reading the body and keeps the connection. Before: the
    gateway pooled it, the PMS read the body as the start of the next request, the next
    user's request completed it, and that user got the answer to the body's author's
    request. A connection that carried a body is now never reused."""
    smuggled = b" /user?name=A-smuggled HTTP/1.1\r\nX-Ignore: "  # user B's request line becomes its header
    body = b"x" * (size - len(smuggled)) + smuggled
    async with raw_pms() as (pms, url), run_gateway(url, upstream__pool_size="1", listen__engine=engine) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/early", gw.port, f"Content-Length: {len(body)}\r\nConnection: close\r\n", "POST") + body)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        status, _, page = await fetch(gw.port, "/user?name=B")
        assert status == 200 and page == b"page of B"
    early = next(conn for conn, _, path in pms.requests if path == "/early")
    assert all(conn != early for conn, _, path in pms.requests if path == "/user?name=B")


async def test_a_post_is_never_sent_twice_when_a_kept_connection_dies():
    """The PMS closes a kept connection as the next request arrives (its keep-alive ran
    out): a GET is sent again on a fresh connection, a POST is not (it may have acted)."""
    async with raw_pms(close_second=True) as (pms, url), run_gateway(url, upstream__pool_size="1", **LEAN) as gw:
        assert (await fetch(gw.port, "/user?name=1"))[0] == 200
        status, _, _ = await fetch(gw.port, "/user?name=post", "POST", "Content-Length: 0\r\n")
        assert status == 502
        assert (await fetch(gw.port, "/user?name=2"))[0] == 200
        status, _, body = await fetch(gw.port, "/user?name=3")
        assert status == 200 and body == b"page of 3"
    assert [(m, p) for _, m, p in pms.requests].count(("POST", "/user?name=post")) == 1
    assert [(c, p) for c, _, p in pms.requests][-2:] == [(2, "/user?name=3"), (3, "/user?name=3")]


class _FailsOnBig(Addon):
    """A response filter that breaks on /big after the PMS began its 2 MB answer."""

    async def response(self, ex: Exchange, upstream) -> web.StreamResponse | None:
        if ex.path.path == "/big":
            raise RuntimeError("filter broke")
        return None


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_response_hook_that_raises_gives_its_pool_slot_back(engine):
    async with raw_pms() as (pms, url), run_gateway(url, addons=[_FailsOnBig()], upstream__pool_size="1",
                                                    upstream__read_timeout="5", listen__engine=engine) as gw:
        for name in ("A", "B"):
            assert (await fetch(gw.port, "/big"))[0] == 500
            status, _, body = await fetch(gw.port, f"/user?name={name}")
            assert status == 200 and body == f"page of {name}".encode()
    for (conn_a, _, path_a), (conn_b, _, _) in zip(pms.requests, pms.requests[1:]):
        assert path_a != "/big" or conn_b != conn_a  # a half-read answer's connection is never reused


class _LatePms:
    """Answers /first, then, once the gateway had time to pool the connection, a second
    answer nobody asked for on it (a broken PMS's late write); other paths as usual."""

    def __init__(self) -> None:
        self.extra_sent = asyncio.Event()
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ")[1].decode()
                writer.write(page("page of " + target.split("=", 1)[-1]))
                await writer.drain()
                if target == "/first":
                    await asyncio.sleep(0.2)  # the PMS's pace: the gateway has pooled the connection
                    writer.write(page("page of A, again"))
                    await writer.drain()
                    self.extra_sent.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_answer_sent_late_on_a_pooled_connection_never_reaches_the_next_user(engine):
    pms = _LatePms()
    server = await asyncio.start_server(pms.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with run_gateway(url, upstream__pool_size="1", listen__engine=engine) as gw:
            assert (await fetch(gw.port, "/first"))[2] == b"page of /first"
            await asyncio.wait_for(pms.extra_sent.wait(), 10)
            status, _, body = await fetch(gw.port, "/user?name=B")
    finally:
        server.close()
    assert status == 200 and body == b"page of B"
