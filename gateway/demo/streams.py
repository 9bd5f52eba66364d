"""Bulk download, upload and WebSocket echo endpoints.

No real PMS page is large enough to prove that the gateway streams instead of buffering,
so these give the proxy's tests bodies of any size with a checksum known in advance.
They need no login: the gateway in front decides who may reach them.
"""

from __future__ import annotations

import hashlib

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024
# Byte i of every download is i % 256: any client can recompute the expected digest.
_PATTERN = bytes(range(256)) * (CHUNK // 256)


def pattern_bytes(size: int) -> bytes:
    """The first `size` bytes of the download pattern (for tests of small sizes)."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


async def download(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    remaining = size
    while remaining > 0:
        chunk = _PATTERN[: min(CHUNK, remaining)]
        await response.write(chunk)
        remaining -= len(chunk)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    received = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        received += len(chunk)
    return web.json_response({"bytes": received, "sha256": digest.hexdigest()})


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/download/{size:\d+}", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/ws/echo", ws_echo)
