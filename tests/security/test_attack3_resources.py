"""Attack on the lean engine's resource bounds (issue 14, third attack pass): whatever one
browser sends or leaves unread, the gateway's memory and time for it stay bounded, and a
slow or silent browser is eventually dropped."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.proxy.exchange import Addon, Exchange
from gateway.proxy.lean import server as lean_server
from tests.harness import run_gateway
from tests.security.raw_pms import get, lean_connections, raw_pms, read_answer, until

LEAN = {"listen__engine": "lean"}
ENGINES = ["aiohttp", "lean"]


async def _sent_without_end(gw, start: bytes) -> bytes:
    """`start`, then a field that never ends, 4 KiB at a time until the gateway answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(start)

    async def feed() -> None:
        try:
            for _ in range(1000):  # up to 4 MB
                writer.write(b"a" * 4096)
                await writer.drain()
        except ConnectionError:
            pass

    feeding = asyncio.create_task(feed())
    try:
        return await asyncio.wait_for(reader.read(), 10)  # well before the head deadline (15 s)
    finally:
        feeding.cancel()
        writer.close()


async def test_a_header_field_without_end_is_refused_at_the_field_limit():
    """Before: httptools kept appending the field's pieces until the head deadline:
    hundreds of megabytes, and quadratic copying that held the event loop for seconds."""
    async with raw_pms() as (pms, url), run_gateway(url, **LEAN) as gw:
        answer = await _sent_without_end(gw, get("/user?name=A", gw.port).rstrip(b"\r\n") + b"\r\nX-Big: ")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert pms.requests == []


async def test_a_trailer_field_without_end_is_refused():
    async with raw_pms() as (pms, url), run_gateway(url, **LEAN) as gw:
        start = get("/user?name=A", gw.port, "Transfer-Encoding: chunked\r\n", "POST") + b"1\r\na\r\n0\r\nX-T: "
        answer = await _sent_without_end(gw, start)
    assert answer.startswith(b"HTTP/1.1 431 ") and answer.count(b"HTTP/1.1") == 1
    assert pms.bodies == []  # the PMS never received the request whole


async def test_a_browser_that_reads_no_answers_is_answered_no_further_and_dropped(monkeypatch):
    """Before: pipelined requests were answered as fast as the PMS gave pages, into a write
    buffer without bound (300 MB for one connection in the attack), for as long as the
    browser kept the connection."""
    monkeypatch.setattr(lean_server, "SEND_STALL_SECONDS", 0.5)
    async with raw_pms() as (pms, url), run_gateway(url, **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/page60k", gw.port) * 3000)  # 180 MB of answers, never read
        await until(lambda: len(pms.requests) > 0, "the first request reached the PMS")
        await until(lambda: not lean_connections(gw), "the browser's connection was dropped")
        writer.close()
    assert len(pms.requests) < 1000  # what the socket buffers hold, and the queue: not all 3000


async def test_bytes_after_an_upgrade_request_are_not_read_without_bound():
    """Before: what followed an upgrade request was appended to one buffer for as long as
    the browser sent it, while the gateway waited on the PMS."""
    async with raw_pms() as (_, url), run_gateway(url, **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/stall", gw.port, "Connection: Upgrade\r\nUpgrade: foo\r\n"))
        for _ in range(64):
            writer.write(b"z" * 256 * 1024)  # 16 MB, into the client's buffer
        await until(lambda: any(c._buffer_paused for c in lean_connections(gw)), "the gateway stopped reading")
        (connection,) = lean_connections(gw)
        assert len(connection._tail) < lean_server._TAIL_LIMIT + 1024 * 1024
        writer.transport.abort()


class _ReadsForms(Addon):
    """Reads the body of /form as a login guard does, before anything is forwarded."""

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        if ex.path.path == "/form":
            await ex.read_body(10_000)
        return None


async def _trickled(gw, path: str, length: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(get(path, gw.port, f"Content-Length: {length}\r\n", "POST") + b"a" * 10)  # and no more
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_body_that_never_ends_gets_408_within_request_timeout(engine):
    """Before: a guard reading a form waited for its body without any deadline (the
    request_timeout covers only the forward): a connection held forever per attacker."""
    async with raw_pms() as (pms, url), run_gateway(url, addons=[_ReadsForms()], limits__request_timeout="0.5",
                                                    listen__engine=engine) as gw:
        for path, length in (("/form", 100), ("/user?name=A", 200_000)):  # a guard reads it; it is streamed up
            answer = await _trickled(gw, path, length)
            assert answer.startswith(b"HTTP/1.1 408 ") and answer.count(b"HTTP/1.1") == 1
    assert pms.bodies == []


@pytest.mark.parametrize("engine", ENGINES)
async def test_100_continue_is_sent_once_the_body_is_wanted(engine):
    async with raw_pms() as (pms, url), run_gateway(url, listen__engine=engine) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/user?name=A", gw.port, "Content-Length: 5\r\nExpect: 100-continue\r\n", "POST"))
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_answer(reader)
        writer.close()
    assert status == 200 and body == b"page of A"
    assert pms.bodies == [b"hello"]


class _Refuses(Addon):
    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        return web.Response(status=401, text="no") if ex.path.path == "/refuse" else None


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_refused_request_is_never_invited_to_send_its_body(engine):
    """Before: aiohttp's router answered `100 Continue` as soon as the route matched, before
    any guard ran: a refused client was told to upload. Now the 100 goes out when a
    handler first reads the body; a refusal without it closes the connection."""
    async with raw_pms() as (pms, url), run_gateway(url, addons=[_Refuses()], listen__engine=engine) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/refuse", gw.port, "Content-Length: 300000\r\nExpect: 100-continue\r\n", "POST"))
        status, headers, _ = await read_answer(reader)
        assert status == 401 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    assert pms.requests == []


async def test_a_refusal_of_a_large_unread_body_reaches_the_browser():
    """The gateway answers before reading a 3 MB body and will not drain it all: before,
    it closed on the unread bytes, which sends a reset that can destroy the answer; now
    it shuts its side and drops what still arrives until the browser closes."""
    async with raw_pms() as (pms, url), run_gateway(url, addons=[_Refuses()], **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/refuse", gw.port, "Content-Length: 3000000\r\n", "POST"))

        async def upload() -> None:
            try:
                for _ in range(30):
                    writer.write(b"x" * 100_000)
                    await writer.drain()
            except ConnectionError:
                pass

        await upload()  # the whole body sent (or refused) before the browser reads its answer
        status, _, body = await read_answer(reader)
        writer.close()
    assert status == 401 and body == b"no"
    assert pms.requests == []


async def test_an_unknown_expectation_gets_a_fixed_417():
    """Before: aiohttp's router answered 417 with the header's value in its body."""
    async with raw_pms() as (pms, url), run_gateway(url, **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/user?name=A", gw.port, "Expect: <script>x</script>\r\n"))
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 417 ") and b"script" not in answer
    assert pms.requests == []


async def test_a_half_closed_connection_is_closed_once_answered():
    """Before: after the browser's end (nothing more can come), the connection stayed
    open until the keep-alive timeout."""
    async with raw_pms() as (_, url), run_gateway(url, **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/user?name=A", gw.port) + get("/user?name=B", gw.port))
        writer.write_eof()
        answers = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answers.count(b"HTTP/1.1 200 ") == 2 and answers.endswith(b"page of B")


async def test_a_body_cut_short_by_the_browsers_end_gets_400():
    async with raw_pms() as (pms, url), run_gateway(url, **LEAN) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/user?name=A", gw.port, "Content-Length: 5\r\n", "POST") + b"hell")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1") == 1
    assert pms.bodies == []
