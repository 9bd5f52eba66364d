"""Issue 8, item 15 (logout): another site cannot sign staff out with a link.

A cross-site top-level GET of the PMS's `/logout` used to end the session. Now a logout
path is honoured only when the browser says the request started on the gateway's own
pages (`Sec-Fetch-Site: same-origin`, or `none` for the address bar; failing fetch
metadata, an `Origin`/`Referer` on the public origin); anything else is sent to the
gateway's logout page, whose POST form carries a token. The PMS's own logout link keeps
working.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.login_env import Browser, LoginEnv, login_env

EVIL = "https://evil.example"


async def signed_in(env: LoginEnv) -> Browser:
    browser = Browser(env)
    await browser.password("alice")
    await browser.enroll("alice")
    return browser


async def still_signed_in(env: LoginEnv, browser: Browser) -> bool:
    status, _, page = await browser.request("GET", "/reservations")
    return status == 200 and "alice" in page.lower() and await env.pms_users_alive() == ["alice"]


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
    {"Sec-Fetch-Site": "cross-site", "Referer": "{url}/reservations"},  # fetch metadata decides
    {"Origin": EVIL},
    {"Referer": EVIL + "/phish"},
    {"Referer": "{url}.evil.example/phish"},  # the public origin as a prefix of another host
]


@pytest.mark.parametrize("headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
async def test_cross_site_logout_link_asks_instead_of_signing_out(tmp_path, headers):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            sent = {k: v.format(url=env.url) for k, v in headers.items()}
            status, answer, _ = await browser.request("GET", "/logout", headers=sent)
            assert status == 303 and answer["Location"] == "/_gateway/logout"
            assert "Clear-Site-Data" not in answer
            assert await still_signed_in(env, browser)
            # The confirmation page: a POST form with a token, which does sign out.
            status, _, page = await browser.request("GET", "/_gateway/logout")
            assert status == 200 and 'method="post"' in page
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            status, answer, _ = await browser.request("POST", "/_gateway/logout", data={"csrf": csrf})
            assert status == 303 and answer["Clear-Site-Data"] == '"cache"'
            await wait_until(lambda: _pms_empty(env))
        finally:
            await browser.close()


async def _pms_empty(env: LoginEnv) -> bool:
    return await env.pms_users_alive() == []


async def test_logout_link_without_any_origin_evidence_asks(tmp_path):
    """A link with `rel=noreferrer` on a plain-http origin proves nothing: not from here."""
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            cookies = "; ".join(f"{c.key}={c.value}" for c in browser.client.cookie_jar)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as bare:
                async with bare.get(env.url + "/logout", headers={"Cookie": cookies}, allow_redirects=False) as response:
                    assert response.status == 303 and response.headers["Location"] == "/_gateway/logout"
            assert await still_signed_in(env, browser)
        finally:
            await browser.close()


async def test_cross_site_logout_post_and_gateway_logout_without_token_are_refused(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            status, _, _ = await browser.request("POST", "/logout", headers={"Origin": EVIL})
            assert status == 403
            status, _, page = await browser.request("GET", "/_gateway/logout")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            status, _, _ = await browser.request("POST", "/_gateway/logout", data={"csrf": csrf}, headers={"Origin": EVIL})
            assert status == 403
            status, _, _ = await browser.request("POST", "/_gateway/logout", data={"csrf": "0" * 64})
            assert status == 403
            assert await still_signed_in(env, browser)
        finally:
            await browser.close()


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {"Referer": "{url}/reservations"}],
    ids=["fetch-metadata", "address-bar", "referer"],
)
async def test_the_pms_own_logout_link_still_signs_out(tmp_path, headers):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            sent = {k: v.format(url=env.url) for k, v in headers.items()}
            status, answer, _ = await browser.request("GET", "/logout", headers=sent)
            assert status in (302, 303) and answer["Location"].startswith("/login")
            await wait_until(lambda: _pms_empty(env))
            status, _, _ = await browser.request("GET", "/reservations")
            assert status == 303
        finally:
            await browser.close()
