"""WebSocket pass-through: the browser's socket bridged to one opened to the upstream.

Runs after the guards, so only a request with a valid session gets a socket; addons that
end sessions can close it through `Exchange.notes["websocket"]`.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from gateway.proxy.exchange import Exchange

# The client library writes its own handshake; the browser's would conflict.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol", "host"}
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


class Bridge:
    """A browser's WebSocket and the upstream's, both open: `run` relays until either ends.
    Apart from `open_websocket` so the request's timeout covers the handshake only, never
    the life of the socket (a chat or a live room plan stays open for hours)."""

    __slots__ = ("browser", "upstream", "ex")

    def __init__(self, browser: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, ex: Exchange) -> None:
        self.browser, self.upstream, self.ex = browser, upstream, ex

    async def run(self) -> web.WebSocketResponse:
        browser, upstream, ex = self.browser, self.upstream, self.ex
        try:
            await asyncio.gather(_pump(browser, upstream, ex, "in"), _pump(upstream, browser, ex, "out"))
        finally:
            await upstream.close()
            await browser.close()
        return browser


async def open_websocket(
    request: web.BaseRequest, ex: Exchange, session: aiohttp.ClientSession, url
) -> Bridge:
    """The handshake: the upstream's socket first, then the browser's 101."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = CIMultiDict((k, v) for k, v in ex.upstream_headers.items() if k.lower() not in _HANDSHAKE)
    headers["Host"] = ex.upstream_headers.get("Host", request.host)
    upstream = await session.ws_connect(
        url, headers=headers, protocols=protocols, autoclose=False, autoping=False, compress=0
    )
    try:
        browser = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), autoping=False)
        await browser.prepare(request)
    except BaseException:
        await upstream.close()
        raise
    ex.status = 101
    register = ex.notes.get("on_websocket")  # lets the session guard close it when the session ends
    if register is not None:
        register(ex.session_hash, browser)
    return Bridge(browser, upstream, ex)


async def _pump(source, sink, ex: Exchange, direction: str) -> None:
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
            size = len(message.data)
        elif message.type == WSMsgType.BINARY:
            await sink.send_bytes(message.data)
            size = len(message.data)
        elif message.type == WSMsgType.PING:
            await sink.ping(message.data)
            size = 0
        elif message.type == WSMsgType.PONG:
            await sink.pong(message.data)
            size = 0
        else:
            break
        if direction == "in":
            ex.bytes_in += size
        else:
            ex.bytes_out += size
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)
