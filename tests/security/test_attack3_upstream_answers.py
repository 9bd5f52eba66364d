"""Attack on the lean engine's response side (issue 14, third attack pass): what a broken
or hostile PMS answers must reach the browser only as one well-framed answer, with no
header the PMS did not send as a header and none an addon's value could inject."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.proxy.exchange import Addon, Exchange
from tests.harness import raw_http, run_gateway
from tests.security.raw_pms import fetch, get, raw_pms

ENGINES = ["aiohttp", "lean"]

MALFORMED = {
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAA\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nAAAAAA",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nAAAAA",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "control": b"HTTP/1.1 200 OK\r\nX-A: a\x0bSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "cr-in-reason": b"HTTP/1.1 200 OK\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "101-unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\nevil",
    "status-0": b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
    "http2-status-line": b"HTTP/2 200\r\nContent-Length: 2\r\n\r\nok",
}


async def _pms_answering(answer: bytes):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            await reader.read()  # keeps the connection open: the gateway decides
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MALFORMED)
async def test_a_malformed_answer_is_a_502_never_relayed(name, engine):
    """llhttp in strict mode refuses the answer (the lean engine), and so does aiohttp's
    parser made strict (`gateway.proxy.strict_answers`): nothing of it reaches the browser."""
    server = await _pms_answering(MALFORMED[name])
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with run_gateway(url, listen__engine=engine) as gw:
            status, head, body = await fetch(gw.port, "/page")
    finally:
        server.close()
    assert status == 502
    assert b"evil" not in head + body and b"AAAAA" not in body


async def test_trailers_of_an_answer_never_become_its_headers():
    """Before: trailers parsed in the same packet as the head were added to the answer's
    headers (the list was shared): a PMS trailer set cookies and Location on the browser."""
    async with raw_pms() as (_, url), run_gateway(url, listen__engine="lean") as gw:
        status, head, body = await fetch(gw.port, "/trailer")
    assert status == 200 and body.endswith(b"ok\r\n0\r\n\r\n")
    assert b"planted" not in head and b"evil.example" not in head


async def test_a_204_goes_out_without_content_length():
    """Before: a PMS's `204` with `Content-Length: 5` was relayed as is: a proxy in front
    of the gateway that honours the length would take the next answer's bytes as its body."""
    async with raw_pms() as (_, url), run_gateway(url, listen__engine="lean") as gw:
        status, head, body = await fetch(gw.port, "/204-length")
    assert status == 204 and body == b""
    assert b"content-length" not in head.lower()


class _InjectingHook(Addon):
    """A response filter whose header value carries a line break (from a PMS value it copied)."""

    async def response(self, ex: Exchange, upstream) -> web.StreamResponse | None:
        upstream.headers["X-Copied"] = "a\r\nSet-Cookie: injected=1"
        return None


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_header_value_with_a_line_break_is_never_written(engine):
    """Refused as it is serialised: the lean engine answers 500, aiohttp's closes silently."""
    async with raw_pms() as (_, url), run_gateway(url, addons=[_InjectingHook()], listen__engine=engine) as gw:
        answer = await raw_http(gw.port, get("/user?name=A", gw.port, "Connection: close\r\n"))
    assert b"injected" not in answer
    assert answer.startswith(b"HTTP/1.1 500 ") or (engine == "aiohttp" and answer == b"")


class _ShortensLength(Addon):
    """A response filter that gets Content-Length wrong on a streamed answer (2 MB sent)."""

    async def response(self, ex: Exchange, upstream) -> web.StreamResponse | None:
        if ex.path.path == "/big":
            upstream.headers["Content-Length"] = "100000"
        return None


async def test_an_answer_never_runs_past_the_length_the_browser_was_told():
    """Before: the relay streamed all the PMS sent after the length it had announced, on a
    kept connection: the browser read the rest as its next answers."""
    async with raw_pms() as (_, url), run_gateway(url, addons=[_ShortensLength()], listen__engine="lean") as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/big", gw.port) + get("/user?name=B", gw.port))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        received = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 10):  # until the gateway ends it
                received += chunk
        except ConnectionError:
            pass
        writer.close()
    assert b"Content-Length: 100000\r\n" in head
    assert len(received) <= 100_000 and b"page of B" not in received  # cut, and nothing after it
