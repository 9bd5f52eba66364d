"""A PMS that answers a refused password with 200 and a compressed page: the failure text
is read as the browser would see it, so a gzip/br answer cannot pass for a success."""

from __future__ import annotations

import gzip

import aiohttp
import brotli
import pytest
from aiohttp import web

from gateway.policy import load_policy
from gateway.policy.schema import LoginIdentity, LoginSuccessRule
from tests.harness import serve_app
from tests.login_env import Browser, login_env

FAILURE = "Invalid login, try again"
ENCODERS = {"gzip": gzip.compress, "br": brotli.compress}


def _pms(coding: str) -> web.Application:
    async def form(request: web.Request) -> web.Response:
        return web.Response(text="<form method=post><input name=username><input name=password></form>",
                            content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        fields = await request.post()
        if fields.get("password") != "right":
            page = f"<html><body><p class=error>{FAILURE}</p></body></html>".encode()
            if coding == "garbled":
                return web.Response(body=b"\x1f\x8bnot gzip", status=200, content_type="text/html",
                                    headers={"Content-Encoding": "gzip"})
            return web.Response(body=ENCODERS[coding](page), status=200, content_type="text/html",
                                headers={"Content-Encoding": coding})
        response = web.Response(status=200, text="<html><body>Welcome</body></html>", content_type="text/html")
        response.set_cookie("PMSSESSID", "s-" + str(fields.get("username")), path="/")
        return response

    app = web.Application()
    app.router.add_get("/login", form)
    app.router.add_post("/login", login)
    return app


def _policy():
    policy = load_policy("policies/default.yaml")
    login = policy.login.model_copy(update={
        "success": LoginSuccessRule(status=[200], redirect_not_to=None, failure_text=FAILURE),
        "identity": LoginIdentity(),  # this PMS shows no user name
    })
    return policy.model_copy(update={"login": login})


@pytest.mark.parametrize("coding", ["gzip", "br", "garbled"])
async def test_compressed_failure_page_is_a_failure(tmp_path, coding):
    async with serve_app(_pms(coding)) as pms_url:
        async with login_env(tmp_path, policy=_policy(), pms_url=pms_url) as env:
            browser = Browser(env)
            try:
                async with aiohttp.ClientSession(auto_decompress=False) as raw:  # the bytes as relayed
                    async with raw.post(
                        env.url + "/login", data="username=alice&password=wrong", allow_redirects=False,
                        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept-Encoding": "gzip, br",
                                 "Origin": env.url},
                    ) as response:
                        assert response.status == 200 and "Location" not in response.headers, response.headers
                        assert "gw_pending" not in response.headers.get("Set-Cookie", "")
                status, headers, _ = await browser.request(
                    "POST", "/login", data="username=alice&password=right",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert headers.get("Location") == "/_gateway/2fa" or '"next"' in _, (status, headers)
            finally:
                await browser.close()
