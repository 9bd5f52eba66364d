"""The benchmark's upstream: the smallest PMS the gateway can sign a user in to.

It serves the measured pages from memory (so the upstream costs as little as possible
and the figures are the proxy's), plus what the gateway's login rule in
policies/default.yaml expects of a PMS: a password form at /login that answers 302 with a
`PMSSESSID` cookie, and an identity page at /reservations ("Logged in as <b>NAME</b>").
For the streaming mode it also swallows uploads (/upload, counting the bytes) and streams
downloads of any size (/download?bytes=N) without holding them in memory.

Run by bench/proxy_bench.py as `--role upstream --port N`.
"""

from __future__ import annotations

import asyncio
import secrets
import signal

from aiohttp import web

PAGES = {"/page2k": 2 * 1024, "/page100k": 100 * 1024}
BENCH_PASSWORD = "bench-pms-password"  # every name signs in with it: the PMS side is not what is measured
SESSION_COOKIE = "PMSSESSID"
CHUNK = 1 << 20

LOGIN_FORM = (b"<!doctype html><title>Login</title><form method=post action=/login>"
              b"<input name=username><input type=password name=password><button>Sign in</button></form>")


def page_body(size: int) -> bytes:
    """An HTML page of exactly `size` bytes."""
    head = b"<!doctype html><html><head><title>bench</title></head><body><pre>\n"
    tail = b"</pre></body></html>\n"
    line = b"Room 101 | Guest: Jane Example | Arrival 2026-05-01 | Departure 2026-05-04 | Rate BAR\n"
    filler = (line * (size // len(line) + 1))[: size - len(head) - len(tail)]
    body = head + filler + tail
    assert len(body) == size
    return body


def fast_loop() -> None:
    """uvloop when installed, as `pms-gateway run` uses it."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def listen_until_signal(protocol_factory, port: int) -> None:
    """Serve `protocol_factory` on loopback until SIGINT/SIGTERM, then stop listening."""
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(protocol_factory, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()


async def serve_until_signal(handler, port: int) -> None:
    """A bare aiohttp low-level server on loopback until SIGINT/SIGTERM (upstream and bare proxy)."""
    server = web.Server(handler, access_log=None, keepalive_timeout=75)
    await listen_until_signal(server, port)
    await server.shutdown(1)


class BenchPms:
    """The upstream's few routes; the pages first, as they are what the load hits."""

    def __init__(self) -> None:
        self.bodies = {path: page_body(size) for path, size in PAGES.items()}
        self.html = {"Content-Type": "text/html; charset=utf-8"}
        self.sessions: dict[str, str] = {}  # PMSSESSID -> username

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = self.bodies.get(request.path)
        if body is not None:
            return web.Response(body=body, headers=self.html)
        if request.path == "/login":
            return await self.login(request)
        if request.path == "/reservations":
            name = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
            if name is None:
                return web.Response(status=302, headers={"Location": "/login"})
            return web.Response(text=f"<p>Logged in as <b>{name}</b></p>", content_type="text/html")
        if request.path == "/home":
            return web.Response(text="<p>home</p>", content_type="text/html")
        if request.path == "/logout":
            self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
            return web.Response(status=302, headers={"Location": "/login"})
        if request.path == "/upload" and request.method == "POST":
            return await self.upload(request)
        if request.path == "/download":
            return await self.download(request)
        return web.Response(status=404, text="not found")

    async def login(self, request: web.BaseRequest) -> web.Response:
        if request.method != "POST":
            return web.Response(body=LOGIN_FORM, headers=self.html)
        form = await request.post()
        if form.get("password") != BENCH_PASSWORD or not form.get("username"):
            return web.Response(body=LOGIN_FORM, headers=self.html)
        token = secrets.token_urlsafe(16)
        self.sessions[token] = str(form["username"]).strip().lower()
        response = web.Response(status=302, headers={"Location": "/home"})
        response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True)
        return response

    async def upload(self, request: web.BaseRequest) -> web.Response:
        received = 0
        while chunk := await request.content.read(CHUNK):
            received += len(chunk)
        return web.json_response({"bytes": received})

    async def download(self, request: web.BaseRequest) -> web.StreamResponse:
        size = int(request.query.get("bytes", "0"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = b"\x5a" * CHUNK
        left = size
        while left > 0:
            await response.write(block[: min(left, CHUNK)])
            left -= CHUNK
        await response.write_eof()
        return response


def role_upstream(port: int) -> None:
    """The upstream: aiohttp's low-level server, uvloop, pre-built pages, keep-alive."""
    fast_loop()
    asyncio.run(serve_until_signal(BenchPms().handle, port))
