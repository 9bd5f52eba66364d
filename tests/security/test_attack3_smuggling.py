"""Attack on the request side of both engines (issue 14, third attack pass): a request the
gateway and a PMS could frame differently is refused before anything goes upstream, and
the bytes after it, a request smuggled behind, are never read as a request. A connection
that must end (Connection: close, HTTP/1.0, an upgrade the gateway did not make) never
carries another request, and never becomes a tunnel."""

from __future__ import annotations

import re

import pytest

from tests.harness import raw_http, run_gateway
from tests.security.raw_pms import get, raw_pms

ENGINES = ["aiohttp", "lean"]
SMUGGLED = "GET /user?name=smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"

# (head lines after the request line and Host, body); each is followed by SMUGGLED.
HOSTILE = {
    "length-and-chunked": ("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    "xchunked": ("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
    "chunked-identity": ("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
    "chunked-folded": ("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
    "chunked-twice": ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    "space-before-colon": ("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
    "two-lengths": ("Content-Length: 1\r\nContent-Length: 1\r\n", "a"),
    "length-list": ("Content-Length: 1, 1\r\n", "a"),
    "length-plus": ("Content-Length: +1\r\n", "a"),
    "length-minus": ("Content-Length: -1\r\n", "a"),
    "length-space-inside": ("Content-Length: 1 1\r\n", "a" * 11),
    "length-hex": ("Content-Length: 0x1\r\n", "a"),
    "length-huge": ("Content-Length: 99999999999999999999999\r\n", "a"),
    "length-empty": ("Content-Length: \r\n", "a"),
    "chunk-size-overflow": ("Transfer-Encoding: chunked\r\n", "10000000000000001\r\na\r\n0\r\n\r\n"),
    "chunk-extension-crlf": ("Transfer-Encoding: chunked\r\n", '1;ext="a\r\nGET"\r\na\r\n0\r\n\r\n'),
    "chunk-size-space": ("Transfer-Encoding: chunked\r\n", "1 \r\na\r\n0\r\n\r\n"),
    "chunk-without-crlf": ("Transfer-Encoding: chunked\r\n", "1\r\naXX0\r\n\r\n"),
    "trailer-framing": ("Transfer-Encoding: chunked\r\n", "1\r\na\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "bare-cr": ("X-A: a\rb\r\n", ""),
    "bare-lf": ("X-A: a\nX-B: b\r\n", ""),
    "nul-value": ("X-A: a\x00b\r\n", ""),
    "nul-name": ("X-\x00A: ab\r\n", ""),
    "control": ("X-A: a\x01b\r\n", ""),
    "obs-fold": ("X-A: a\r\n b\r\n", ""),
    "empty-name": (": b\r\n", ""),
}
# Request lines (with the Host line where it belongs) refused by both engines.
REQUEST_LINES = {
    "http2-preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http-1.2": "GET /user?name=A HTTP/1.2\r\nHost: {host}\r\n\r\n",
    "http-0.9": "GET /user?name=A\r\n\r\n",
    "authority-form-get": "GET evil.example:443 HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "long-target": "GET /user?name=" + "a" * 70_000 + " HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "space-in-target": "GET /user?name=A x HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "lowercase-method": "get /user?name=A HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "bare-lf-lines": "GET /user?name=A HTTP/1.1\nHost: {host}\n\n",
    "bare-cr-request-line": "GET /user?name=A HTTP/1.1\rHost: {host}\r\n\r\n",
    "http-2.0": "GET /user?name=A HTTP/2.0\r\nHost: {host}\r\n\r\n",
    "http-0.9-line": "GET /user?name=A HTTP/0.9\r\nHost: {host}\r\n\r\n",
    "chunked-on-http-1.0": "POST /user?name=A HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}
# Framed like any request, refused by the gateway's own check of the target: the request
# behind is a request of its own (it passes the guards as one), never part of this one.
TARGET_FORMS = {
    "absolute-form": "GET http://evil.example/user?name=A HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "asterisk-form": "OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "authority-form": "CONNECT evil.example:443 HTTP/1.1\r\nHost: {host}\r\n\r\n",
}
# Refused by the lean engine; the aiohttp engine forwards them (an upgrade request's
# body). llhttp reads no body after
# an upgrade request: forwarded, it declared a body it never sent (the PMS would have read
# the next user's request as it).
UPGRADE = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
LEAN_ONLY = {
    "upgrade-with-length": "POST /user?name=A HTTP/1.1\r\nHost: {host}\r\n" + UPGRADE + "Content-Length: 5\r\n\r\nhello",
    "upgrade-chunked": "POST /user?name=A HTTP/1.1\r\nHost: {host}\r\n" + UPGRADE
                       + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
}


async def _refused(engine: str, raw: str) -> None:
    async with raw_pms() as (pms, url), run_gateway(url, listen__engine=engine) as gw:
        host = f"127.0.0.1:{gw.port}"
        answer = await raw_http(gw.port, (raw + SMUGGLED).replace("{host}", host).encode("latin-1"), timeout=3)
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert len(statuses) == 1 and 400 <= int(statuses[0]) < 600, answer[:200]
    assert pms.requests == []  # neither the request nor the one behind it went upstream


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", HOSTILE)
async def test_an_ambiguous_request_is_refused_and_nothing_goes_upstream(engine, name):
    head, body = HOSTILE[name]
    await _refused(engine, "POST /user?name=A HTTP/1.1\r\nHost: {host}\r\n" + head + "\r\n" + body)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", REQUEST_LINES)
async def test_a_request_line_outside_http_1x_origin_form_is_refused(engine, name):
    await _refused(engine, REQUEST_LINES[name])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", TARGET_FORMS)
async def test_a_target_outside_origin_form_is_refused(engine, name):
    async with raw_pms() as (pms, url), run_gateway(url, listen__engine=engine) as gw:
        raw = (TARGET_FORMS[name] + SMUGGLED).replace("{host}", f"127.0.0.1:{gw.port}")
        answer = await raw_http(gw.port, raw.encode(), timeout=3)
    assert re.match(rb"HTTP/1\.[01] 40\d ", answer), answer[:100]
    assert "/user?name=A" not in pms.paths() and not any(p.startswith(("http", "*", "evil")) for p in pms.paths())


@pytest.mark.parametrize("name", LEAN_ONLY)
async def test_the_lean_engine_refuses_what_the_aiohttp_engine_let_through(name):
    await _refused("lean", LEAN_ONLY[name])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("first", [
    "GET /user?name=A HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
    "GET /user?name=A HTTP/1.0\r\nHost: {host}\r\n\r\n",
], ids=["connection-close", "http-1.0"])
async def test_a_connection_that_must_end_carries_no_second_request(engine, first):
    """The lean engine answers the first request and closes; aiohttp's parser refuses the
    bytes after a closing request, the first request with them (400)."""
    async with raw_pms() as (pms, url), run_gateway(url, listen__engine=engine) as gw:
        host = f"127.0.0.1:{gw.port}"
        answer = await raw_http(gw.port, (first + SMUGGLED).replace("{host}", host).encode())
    assert len(re.findall(rb"HTTP/1\.[01] \d{3} ", answer)) == 1
    assert "/user?name=smuggled" not in pms.paths()
    if engine == "lean":
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"page of A")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("upgrade", [
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    "Connection: Upgrade\r\nUpgrade: foo\r\n",
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
], ids=["h2c", "unknown", "websocket-refused-by-the-pms"])
async def test_an_upgrade_the_gateway_did_not_make_is_never_a_tunnel(engine, upgrade):
    """The PMS (raw, no WebSocket) answers the request as a plain one, or refuses the
    handshake: what the browser sent after the upgrade request is never relayed as bytes.
    The lean engine closes after its one answer; aiohttp's reads what follows a refused
    WebSocket handshake as a request of its own (guarded as any other)."""
    async with raw_pms() as (pms, url), run_gateway(url, listen__engine=engine) as gw:
        host = f"127.0.0.1:{gw.port}"
        raw = get("/user?name=A", gw.port, upgrade).decode() + SMUGGLED.replace("{host}", host)
        answer = await raw_http(gw.port, raw.encode())
    assert not any(b"smuggled" in body for body in pms.bodies)
    assert not any(b"101 Switching" in line for line in answer.split(b"\r\n"))
    if engine == "lean":
        assert len(re.findall(rb"HTTP/1\.1 \d{3} ", answer)) == 1
        assert "/user?name=smuggled" not in pms.paths()
