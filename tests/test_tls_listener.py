"""TLS at the gateway: the staff listener speaks HTTPS and its cookies are Secure."""

from __future__ import annotations

import ssl

import aiohttp

from gateway.demo import DemoSettings, create_app
from tests.harness import serve_app
from tests.processes import gateway_process
from tests.test_egress import self_signed_cert


async def test_https_listener_serves_and_marks_cookies_secure(tmp_path):
    cert, key = self_signed_cert(tmp_path / "tls", ["127.0.0.1"])
    tls = {"listen": {"tls_cert": str(cert), "tls_key": str(key)}}
    async with serve_app(create_app(DemoSettings())) as pms:
        with gateway_process(tmp_path, pms, None, tls, tls_ca=cert) as (url, _):
            assert url.startswith("https://")
            context = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
                async with client.get(url + "/login", ssl=context) as response:
                    assert response.status == 200 and "Staff login" in await response.text()
                async with client.get(url + "/reservations", ssl=context, allow_redirects=False) as response:
                    assert response.status == 303
                    cookies = response.headers.getall("Set-Cookie")
            assert any(c.startswith("gw_notice=") and "; Secure" in c for c in cookies)
            async with aiohttp.ClientSession() as plain:  # no plain HTTP on a TLS listener
                try:
                    async with plain.get(url.replace("https://", "http://") + "/login") as response:
                        assert response.status >= 400
                except aiohttp.ClientError:
                    pass
