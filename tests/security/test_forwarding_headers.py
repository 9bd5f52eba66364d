"""Issue 8 items 5 and 15 (`Connection: Host`): forwarding headers the PMS must not believe.

`X_Forwarded_For`, `X_Real_IP` and `X-Forwarded_Host` reached the upstream verbatim, and
WSGI/CGI read them as `HTTP_X_FORWARDED_FOR`, the same variable as the dash spelling.
`Connection: Host` made the gateway drop the Host header, so the PMS saw its internal
host. These requests go through a real gateway to the naive PMS's `/echo`, which reports
every header it received.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.policy import load_policy
from tests.security.hostile import naive, send

SPOOFED = "6.6.6.6"
PUBLIC_PATHS = [*load_policy("policies/default.yaml").login.public_paths, "^/echo", "^/hop$"]


async def _echo(url: str, headers: list[tuple[str, str]]) -> dict:
    status, body = await send(url, "GET", "/echo", headers)
    assert status == 200, body
    seen = json.loads(body)
    seen["names"] = {name.lower() for name, _ in seen["headers"]}
    seen["first"] = {}
    for name, value in seen["headers"]:
        seen["first"].setdefault(name.lower(), value)
    return seen


async def test_underscored_and_exotic_forwarding_headers_never_reach_the_pms(tmp_path):
    hostile = [
        ("X_Forwarded_For", SPOOFED),
        ("X_Real_IP", SPOOFED),
        ("X-Forwarded_Host", "evil.example"),
        ("X-Forwarded-Server", "evil.example"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Client-IP", SPOOFED),
        ("True-Client-IP", SPOOFED),
        ("CF-Connecting-IP", SPOOFED),
        ("X-Cluster-Client-IP", SPOOFED),
        ("X-Original-Forwarded-For", SPOOFED),
        ("X-Real-IP", SPOOFED),
        ("Forwarded", f"for={SPOOFED}"),
        ("X-Forwarded-For", SPOOFED),
        ("Remote_Addr", SPOOFED),
    ]
    async with naive(tmp_path, public_paths=PUBLIC_PATHS) as pms:
        seen = await _echo(pms.env.url, hostile)
    assert not any("_" in name for name in seen["names"])
    assert all(SPOOFED not in value and "evil" not in value for _, value in seen["headers"]), seen["headers"]
    assert seen["first"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["first"]["x-forwarded-host"] == urlsplit(pms.env.url).netloc
    assert not seen["names"] & {"x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip", "x-forwarded-server"}


@pytest.mark.parametrize(
    "named", ["Host", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Request-Id", "Cookie", "Authorization"]
)
async def test_connection_cannot_remove_an_end_to_end_header(tmp_path, named):
    async with naive(tmp_path, public_paths=PUBLIC_PATHS) as pms:
        seen = await _echo(
            pms.env.url,
            [("Connection", named), ("Cookie", "theme=dark"), ("Authorization", "Basic YTpi"), ("X-Drop-Me", "1"),
             ("Connection", "X-Drop-Me")],
        )
    host = urlsplit(pms.env.url).netloc
    assert seen["first"]["host"] == host  # the public host, never the PMS's internal one
    assert seen["first"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["first"]["x-forwarded-host"] == host
    assert seen["first"]["forwarded"].startswith("for=127.0.0.1")
    assert seen["first"]["x-request-id"]
    assert seen["first"]["cookie"] == "theme=dark"
    assert seen["first"]["authorization"] == "Basic YTpi"
    assert "x-drop-me" not in seen["names"]  # a custom header may still be made hop-by-hop


async def test_the_pms_cannot_use_connection_to_drop_its_own_end_to_end_headers(tmp_path):
    async with naive(tmp_path, public_paths=PUBLIC_PATHS) as pms, aiohttp.ClientSession() as client:
        async with client.get(pms.env.url + "/hop") as response:
            assert response.headers["Cache-Control"] == "no-store"
            assert "theme=dark; Path=/" in response.headers.getall("Set-Cookie", [])
            assert "X-Secret-Hop" not in response.headers
