"""Issue 8 item 12: WebSocket handshakes were bridged cross-origin.

A page on any site could open a socket to the gateway with the staff member's cookies
and read what the PMS pushes (cross-site WebSocket hijacking): browsers apply no
same-origin policy to WebSockets, only the `Origin` header tells. A handshake is now
bridged only when its one `Origin` is the gateway's own.
"""

from __future__ import annotations

import aiohttp
import pytest

from gateway.policy import load_policy
from tests.login_env import Browser, login_env
from tests.security.hostile import naive

PUBLIC_PATHS = [*load_policy("policies/default.yaml").login.public_paths, "^/ws$"]
REFUSED_ORIGINS = [
    {"Origin": "https://evil.example"},
    {},  # no Origin at all
    {"Origin": "null"},  # a sandboxed frame or a file: page
]


async def _refused_handshake(client: aiohttp.ClientSession, url: str, headers: dict) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(url, headers=headers)
    return info.value.status


async def test_naive_pms_socket_opens_only_from_the_gateways_origin(tmp_path):
    async with naive(tmp_path, public_paths=PUBLIC_PATHS) as pms, aiohttp.ClientSession() as client:
        url = pms.env.url.replace("http", "ws") + "/ws"
        for headers in REFUSED_ORIGINS + [{"Origin": pms.env.url.replace("127.0.0.1", "localhost")}]:
            assert await _refused_handshake(client, url, headers) == 403, headers
        assert not pms.saw("/ws")  # the upstream never saw a refused handshake
        async with client.ws_connect(url, headers={"Origin": pms.env.url}) as ws:
            assert (await ws.receive()).data == "hello None"
            await ws.send_str("ping")
            assert (await ws.receive()).data == "ping"
        assert pms.saw("/ws")


async def test_a_signed_in_staff_socket_cannot_be_opened_by_another_site(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")  # signed in: the cookie jar holds a live session
            url = env.url.replace("http", "ws") + "/ws/echo"
            for headers in REFUSED_ORIGINS:
                assert await _refused_handshake(browser.client, url, headers) == 403, headers
            async with browser.client.ws_connect(url, headers={"Origin": env.url}) as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hello"
        finally:
            await browser.close()

