"""A vaulted cookie hidden in another cookie's value never reaches the PMS.

Found by the attack on issue 8: the gateway splits the browser's `Cookie` header on `;`
only, as browsers do, and strips every vaulted name it finds. aiohttp and Python's
SimpleCookie also split on white space (and RFC 2109 parsers such as Tomcat's legacy one
on commas), so `theme=dark PMSSESSID=<token>` was one harmless cookie to the gateway and
the PMS's session cookie to the PMS; PHP percent-decodes cookie names, so `PMS%53ESSID`
was its session cookie too (and, being first, the one PHP keeps over the vault's): a browser without any gateway session reached the
PMS in a PMS session (one planted by a guest page's script, or fixated before a login).
Such a pair is now dropped whole; a value with spaces that hides nothing still passes.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

import pytest

from gateway.sessions.cookies import CookiePolicy
from gateway.policy import load_policy
from tests.security import naive_upstream
from tests.security.hostile import naive, send

SMUGGLED = [
    "theme=dark PMSSESSID={t}",
    "theme=dark\tPMSSESSID={t}",
    "theme=dark, PMSSESSID={t}",
    "theme=dark,PMSSESSID={t}",
    'theme="dark" PMSSESSID={t}',
    "theme=dark pmssessid={t}",
    "theme=dark PMSSESSID ={t}",
    "PMS%53ESSID={t}",  # PHP percent-decodes cookie names, and keeps the first of two
    "PMSSESSID%20={t}",
    "theme=dark PMS%53ESSID={t}",
]


@pytest.mark.parametrize("cookie", SMUGGLED)
async def test_a_session_cookie_hidden_in_a_value_never_reaches_the_pms(tmp_path, cookie):
    async with naive(tmp_path) as upstream:
        token = "fixated-token"
        status, body = await send(upstream.env.url, "GET", "/echo", [("Cookie", cookie.format(t=token))])
        assert status == 200
        seen = json.loads(body)
        assert token not in json.dumps(seen["cookies"]), seen["cookies"]
        assert not any(unquote_plus(name).strip().lower() == "pmssessid" for name in seen["cookies"])


async def test_a_value_with_spaces_that_hides_nothing_still_passes(tmp_path):
    async with naive(tmp_path) as upstream:
        status, body = await send(upstream.env.url, "GET", "/echo", [("Cookie", "note=hello world; lang=fr")])
        assert status == 200
        seen = json.loads(body)["cookies"]
        assert seen["lang"] == "fr" and "note" in seen


def test_the_rebuilt_header_holds_the_vault_once():
    cookies = CookiePolicy(load_policy("policies/default.yaml").login)
    header = cookies.upstream_cookie_header("theme=dark PMSSESSID=evil; lang=fr", {"PMSSESSID": "vault"})
    assert header == "lang=fr; PMSSESSID=vault"
    assert cookies.upstream_cookie_header("gw_pref=a gw_session=x; a=b", {}) == "a=b"
    assert cookies.upstream_cookie_header("PMS%53ESSID=evil; a.b=1", {"PMSSESSID": "v"}) == "a.b=1; PMSSESSID=v"


async def test_a_credential_hidden_in_a_cookie_value_is_refused_at_login(tmp_path):
    """The naive PMS reads a missing credential from the cookies (ASP.NET's Request[])."""
    async with naive(tmp_path) as upstream:
        status, _ = await send(
            upstream.env.url, "POST", "/login",
            [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "theme=dark password=x")],
            b"username=bob&password=" + naive_upstream.PASSWORDS["bob"].encode(),
        )
        assert status == 400
        assert not upstream.saw("/login")
