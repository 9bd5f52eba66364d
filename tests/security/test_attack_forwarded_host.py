"""Behind a trusted proxy, the host the gateway passes on is a public name it checked.

Found by the attack on issue 8: with `trusted_proxies` set, the gateway took the first
value of `X-Forwarded-Host` as the public host and passed it to the PMS (as
`X-Forwarded-Host` and `Forwarded: host=`) unchecked; only the `Host` header was held
against `public_urls`. Apache's mod_proxy appends to a client's own header, so a client
sending `X-Forwarded-Host: evil.example` had the PMS build its links (a reset e-mail's,
for one) on evil.example. The gateway now takes the value its proxy wrote (the last) and
answers 421 unless it is a public name.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.harness import serve_app
from tests.login_env import LoginEnv, login_env
from tests.security import naive_upstream
from tests.security.hostile import _policy, send


@contextlib.asynccontextmanager
async def behind_proxy(tmp_path) -> AsyncIterator[LoginEnv]:
    """The naive PMS (`/echo` public), the test client being the trusted proxy."""
    app = naive_upstream.create_app()
    async with serve_app(app) as pms, login_env(
        tmp_path, policy=_policy(tmp_path, ["^/echo"]), pms_url=pms,
        config_overrides={"trusted_proxies": '["127.0.0.1/32"]'},
    ) as env:
        yield env


def _forwarded(body: str) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"] if k.lower() in ("x-forwarded-host", "forwarded")}


@pytest.mark.parametrize("value", ["evil.example", "EVIL.example:443", "evil.example, {public}, evil.example"])
async def test_a_forwarded_host_that_is_no_public_name_is_refused(tmp_path, value):
    async with behind_proxy(tmp_path) as env:
        public = env.url.split("//")[1]
        status, _ = await send(env.url, "GET", "/echo", [("X-Forwarded-Host", value.format(public=public))])
        assert status == 421


async def test_the_value_the_proxy_wrote_is_the_one_passed_on(tmp_path):
    async with behind_proxy(tmp_path) as env:
        public = env.url.split("//")[1]
        status, body = await send(env.url, "GET", "/echo", [("X-Forwarded-Host", f"evil.example, {public}")])
        assert status == 200
        headers = _forwarded(body)
        assert headers["x-forwarded-host"] == public and "evil" not in headers["forwarded"]


async def test_the_scheme_is_the_one_the_proxy_wrote(tmp_path):
    """The same for `X-Forwarded-Proto`: a client's own `https` before the proxy's `http`
    would have the gateway believe a TLS connection (and build its origin on it)."""
    async with behind_proxy(tmp_path) as env:
        status, body = await send(env.url, "GET", "/echo", [("X-Forwarded-Proto", "https, http")])
        assert status == 200
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert headers["x-forwarded-proto"] == "http" and "proto=http;" in headers["forwarded"]
