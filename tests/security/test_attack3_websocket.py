"""A WebSocket outlives `limits.request_timeout` on both engines (issue 14, third attack
pass): the timeout bounds the handshake, never the life of the bridged socket. Before,
the forward's timeout wrapped the whole bridge: every socket was closed after 60 s."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.harness import run_gateway

ENGINES = ["aiohttp", "lean"]
TIMEOUT = 0.3  # the gateway's request_timeout in these tests


async def _answers_late(request: web.Request) -> web.WebSocketResponse:
    """A PMS socket that answers each message after longer than the request timeout."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await asyncio.sleep(TIMEOUT * 3)  # the PMS's pace, not a wait of the test's
            await ws.send_str("late:" + message.data)
    return ws


async def _slow_handshake(request: web.Request) -> web.WebSocketResponse:
    await asyncio.sleep(TIMEOUT * 10)
    return await _answers_late(request)


@pytest.fixture
async def socket_pms():
    app = web.Application()
    app.router.add_get("/ws", _answers_late)
    app.router.add_get("/slow-ws", _slow_handshake)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_websocket_lives_past_the_request_timeout(socket_pms, engine):
    async with run_gateway(socket_pms, limits__request_timeout=str(TIMEOUT), listen__engine=engine) as gw, \
            aiohttp.ClientSession() as client:
        async with client.ws_connect(gw.url.replace("http", "ws") + "/ws") as ws:
            for word in ("a", "b"):
                await ws.send_str(word)
                message = await asyncio.wait_for(ws.receive(), 10)
                assert message.type == WSMsgType.TEXT and message.data == "late:" + word


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_handshake_the_pms_never_completes_still_times_out(socket_pms, engine):
    async with run_gateway(socket_pms, limits__request_timeout=str(TIMEOUT), listen__engine=engine) as gw, \
            aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await asyncio.wait_for(client.ws_connect(gw.url.replace("http", "ws") + "/slow-ws"), 10)
    assert refused.value.status == 504
