"""A test upstream that reports exactly what it received, for header and path fidelity tests."""

from __future__ import annotations

import asyncio
import gzip
import hashlib

from aiohttp import WSMsgType, web

SEEN = web.AppKey("seen", list)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[SEEN].append(request.raw_path)
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def set_cookie(request: web.Request) -> web.Response:
    response = web.json_response({"cookie_seen": request.headers.get("Cookie")})
    name = request.query.get("name", "sid")
    response.headers.add("Set-Cookie", f"{name}={request.query['value']}; Domain=127.0.0.1; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "other=1; Path=/")
    return response


async def redirect(request: web.Request) -> web.Response:
    """Like a PMS that builds absolute links from its own address, not from the Host header."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    return web.Response(status=302, headers={"Location": f"http://{host}:{port}/landing?x=1"})


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(b"hello " * 1000), headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Kept": "yes"})


async def not_modified(request: web.Request) -> web.Response:
    return web.Response(status=304, headers={"ETag": '"v1"'})


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index in range(5):
        await response.write(f"part-{index};".encode())
    await response.write_eof()
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    for _ in range(10_000):
        await response.write(b"x" * 65536)
        await asyncio.sleep(0.001)
    await response.write_eof()
    return response


async def hop_headers(request: web.Request) -> web.Response:
    return web.Response(
        text="ok",
        headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5", "X-Normal": "kept"},
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "3")))
    return web.Response(text="late")


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


def create_upstream(static_dir=None) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[SEEN] = []
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/nocontent", no_content)
    app.router.add_get("/notmodified", not_modified)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/hop", hop_headers)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws_echo)
    if static_dir is not None:
        app.router.add_static("/files/", static_dir)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
