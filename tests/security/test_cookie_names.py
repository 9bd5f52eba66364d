"""Issue 8, item 13: cookie names are compared as browsers compare them (trimmed).

`PMSSESSID =x` from the PMS is the cookie `PMSSESSID` to a browser: it reached the
browser because the gateway compared the untrimmed name with the vaulted one. And a
browser-sent ` PMSSESSID=forged` is the PMS's session cookie to most servers: it must
never reach the PMS beside (or instead of) the vault's. Checked on the cookie module,
against the naive upstream (whose `/sloppy-cookie` writes `PMSSESSID =x` and whose
`/echo` reports the cookies it got) and against the demo PMS.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.policy import load_policy
from gateway.policy.schema import LoginIdentity, LoginRule
from gateway.sessions.cookies import CookiePolicy, parse_cookie_header, set_cookie_name
from tests.harness import serve_app
from tests.login_env import Browser, LoginEnv, login_env, signed_in_without_csrf
from tests.security import naive_upstream

SLOPPY_SET_COOKIES = ["PMSSESSID =x", "PMSSESSID\t=x; Path=/", " PMSSESSID=x", "PMSSESSID= x ", "pmssessid=x"]
IDENTITY_PATTERN = "Logged in as <b>([^<]+)</b>"
FORGED_COOKIES = [" PMSSESSID=forged", "PMSSESSID =forged", "PMSSESSID\t=forged", "\tPMSSESSID=forged", "pmssessid=forged"]


@pytest.mark.parametrize("header", SLOPPY_SET_COOKIES)
def test_a_sloppy_set_cookie_of_a_vaulted_name_is_vaulted_under_the_trimmed_name(header):
    updates, passed = CookiePolicy(LoginRule()).take_vaulted([header])
    assert passed == []
    assert updates == {set_cookie_name(header): "x"} and set_cookie_name(header).upper() == "PMSSESSID"


def test_a_nameless_set_cookie_is_dropped():
    # A browser sends `=PMSSESSID=x` back as `PMSSESSID=x`: never to the browser.
    assert CookiePolicy(LoginRule()).take_vaulted(["=PMSSESSID=x; Path=/"]) == ({}, [])


def test_gateway_cookie_names_cannot_be_set_by_the_pms_with_spaces():
    assert CookiePolicy(LoginRule()).take_vaulted(["gw_session =x", " gw_device=y"]) == ({}, [])


def test_every_browser_spelling_of_a_vaulted_name_is_stripped_before_the_vault_is_injected():
    header = "theme=dark; " + "; ".join(FORGED_COOKIES) + "; gw_session =s; lang = en"
    upstream = CookiePolicy(LoginRule()).upstream_cookie_header(header, {"PMSSESSID": "real"})
    assert upstream == "theme=dark; lang=en; PMSSESSID=real"


def test_the_allow_list_is_exact_and_trimmed():
    rule = LoginRule(vault_all_cookies_except=["csrf_token"])
    updates, passed = CookiePolicy(rule).take_vaulted(["csrf_token =c", "Csrf_Token=d", "other=e"])
    assert passed == ["csrf_token =c"] and updates == {"Csrf_Token": "d", "other": "e"}
    assert parse_cookie_header(" csrf_token =c;x") == [("csrf_token", "c")]


# -- against the naive upstream ----------------------------------------------------------


@contextlib.asynccontextmanager
async def naive_gateway(tmp_path) -> AsyncIterator[LoginEnv]:
    """A gateway in front of the naive PMS, which names the signed-in user on `/`."""
    policy = load_policy("policies/default.yaml")
    login = policy.login.model_copy(update={"identity": LoginIdentity(path="/", pattern=IDENTITY_PATTERN)})
    async with serve_app(naive_upstream.create_app()) as pms_url:
        async with login_env(tmp_path, policy=policy.model_copy(update={"login": login}), pms_url=pms_url) as env:
            yield env


async def raw_cookie_request(browser: Browser, path: str, extra: str) -> dict:
    """GET `path` with the browser's gateway cookies plus `extra`, the header sent byte for byte."""
    jar = "; ".join(f"{c.key}={c.value}" for c in browser.client.cookie_jar)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        async with raw.get(browser.env.url + path, headers={"Cookie": f"{jar}; {extra}",
                                                             "Sec-Fetch-Site": "same-origin"}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


def names_sent_to_browser(browser: Browser) -> set[str]:
    return {set_cookie_name(c).upper() for c in browser.set_cookies}


async def test_sloppy_pms_cookie_never_reaches_the_browser(tmp_path):
    async with naive_gateway(tmp_path) as env:
        browser = await signed_in_without_csrf(env)
        try:
            status, _, _ = await browser.request("GET", "/sloppy-cookie")
            assert status == 302
            assert "PMSSESSID" not in names_sent_to_browser(browser)
            assert all(c.key.strip().upper() != "PMSSESSID" for c in browser.client.cookie_jar)
            status, _, body = await browser.request("GET", "/echo")
            assert status == 200 and '"user": "alice"' in body  # still the vault's own session
        finally:
            await browser.close()


@pytest.mark.parametrize("forged", FORGED_COOKIES)
async def test_browser_sent_vaulted_cookie_with_whitespace_never_reaches_the_pms(tmp_path, forged):
    async with naive_gateway(tmp_path) as env:
        browser = await signed_in_without_csrf(env)
        try:
            seen = await raw_cookie_request(browser, "/echo", forged)
            cookie_headers = [v for k, v in seen["headers"] if k.lower() == "cookie"]
            assert len(cookie_headers) == 1 and "forged" not in cookie_headers[0]
            assert "forged" not in seen["cookies"].values() and seen["user"] == "alice"
            assert not any(k.lower().startswith("gw_") for k in seen["cookies"])
        finally:
            await browser.close()


async def test_browser_sent_vaulted_cookie_without_a_session_never_reaches_the_pms(tmp_path):
    """A public path gets no vault, and no browser-made PMS session either."""
    async with naive_gateway(tmp_path) as env:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
            async with raw.get(env.url + "/login", headers={"Cookie": " PMSSESSID=forged"}) as response:
                assert response.status == 200
                assert "Not logged in" in await response.text()


# -- against the demo PMS ----------------------------------------------------------------


async def test_demo_pms_session_survives_forged_spellings_and_stays_vaulted(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            extra = "; ".join(f"{f.split('=')[0]}=forged" for f in FORGED_COOKIES)
            jar = "; ".join(f"{c.key}={c.value}" for c in browser.client.cookie_jar)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
                async with raw.get(env.url + "/reservations", headers={"Cookie": f"{extra}; {jar}"}) as response:
                    page = await response.text()
                    assert response.status == 200 and "alice" in page.lower()
                    assert not any(set_cookie_name(c).upper() == "PMSSESSID" for c in response.headers.getall("Set-Cookie", []))
            assert await env.pms_users_alive() == ["alice"]
            assert "PMSSESSID" not in names_sent_to_browser(browser)
        finally:
            await browser.close()
