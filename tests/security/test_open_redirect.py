"""Issue 8 item 4: open redirect after the second factor.

`/\\evil.example/phish`, `\\/evil.example` and `/\\/evil.example` passed the old check
(urljoin does not read `\\` as `/`, browsers do) and `ReturnUrl` slipped past a
case-sensitive `returnUrl`. One reader (gateway.readers.redirects) now judges every
redirect; these tests send the hostile targets to the demo PMS, to a PMS that redirects
wherever `ReturnUrl` says, and check the reader against a WHATWG URL parser (ada, the
one Node uses) the way a browser would resolve the target.
"""

from __future__ import annotations

import contextlib
from urllib.parse import quote, unquote

import ada_url
import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import load_policy
from gateway.readers.redirects import is_local_location, is_local_target, unsafe_targets
from tests.harness import serve_app
from tests.login_env import Browser, login_env
from tests.security import naive_upstream

PUBLIC = "https://pms.hotel.example"
HOSTILE = [
    "/\\evil.example/phish",
    "\\/evil.example",
    "/\\/evil.example",
    "/%5Cevil.example",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%252F%252Fevil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    " //evil.example",
    "//evil.example",
    "https://evil.example/",
    "https:evil.example",
    "javascript:alert(1)",
    PUBLIC + "@evil.example/",
    PUBLIC + ".evil.example/",
]


def _browser_target(value: str, base: str = PUBLIC + "/login") -> str | None:
    """The origin a browser navigates to for `Location: value`, None if it would not."""
    try:
        return ada_url.URL(value, base).origin
    except ValueError:
        return None


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_targets_are_refused(value):
    assert not is_local_location(value, PUBLIC)
    assert not is_local_target(value)


@pytest.mark.parametrize("value", ["/", "/reservations/1002?tab=card#top", "/search?q=a%2Fb", PUBLIC + "/x", PUBLIC])
def test_local_targets_pass(value):
    assert is_local_location(value, PUBLIC)
    assert _browser_target(value) == PUBLIC


def test_next_names_match_in_any_case():
    assert unsafe_targets("ReturnUrl=%2F%5Cevil.example", None, ["returnUrl"]) == ["ReturnUrl"]
    assert unsafe_targets("", b"RETURNURL=//evil.example", ["returnUrl"]) == ["RETURNURL"]
    assert unsafe_targets("returnUrl=/reservations", None, ["returnUrl"]) == []


# Characters that change how a browser reads a URL, plus anything at all.
_TRICKY = st.sampled_from(["/", "\\", "%", "2f", "2F", "5c", "5C", "25", ".", ":", "@", "?", "#", "\t", "\n", "\r", " ", "\x00", "evil", "https:", "\u3002", "\uff0f"])
_TARGETS = st.one_of(
    st.lists(_TRICKY, max_size=12).map("".join),
    st.text(max_size=30),
    st.tuples(st.sampled_from(["", PUBLIC]), st.lists(_TRICKY, max_size=10).map("".join)).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(_TARGETS)
def test_an_accepted_target_keeps_the_browser_on_the_public_origin(value):
    """If the reader accepts it, a WHATWG browser resolving it (as sent, and after each
    percent-decoding a PMS might apply) stays on the public origin."""
    if not is_local_location(value, PUBLIC):
        return
    seen = set()
    while value not in seen:
        seen.add(value)
        assert _browser_target(value) in (PUBLIC, None), value
        assert _browser_target(value, PUBLIC + "/a/b/") in (PUBLIC, None), value
        value = unquote(value)


# -- through the gateway ------------------------------------------------------------------


async def test_login_with_an_off_site_next_is_refused_before_the_pms(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            for value in ["/\\evil.example/phish", "\\/evil.example", "/\\/evil.example", "/%5Cevil.example"]:
                status, headers, _ = await browser.password("alice", extra="&next=" + quote(value, safe=""))
                assert status == 400 and "Location" not in headers, value
            # The name in another case, in the query string (ASP.NET reads both alike).
            _, _, page = await browser.request("GET", "/login")
            status, headers, _ = await browser.request(
                "POST", "/login?ReturnUrl=" + quote("/\\evil.example", safe=""),
                data={"username": "alice", "password": "alice-demo-pw"},
            )
            assert status == 400 and "Location" not in headers
            assert await env.pms_users_alive() == []  # the password never reached the PMS
        finally:
            await browser.close()


async def test_a_local_next_still_leads_there_after_the_second_factor(tmp_path):
    async with login_env(tmp_path) as env:
        first, second = Browser(env), Browser(env)
        try:
            await first.password("alice")
            await first.enroll("alice")
            status, headers, _ = await second.password("alice", extra="&next=%2Freservations%2F1002")
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            env.clock.advance(30)
            status, headers, _ = await second.submit(action="verify", code=env.code("alice"))
            assert status in (302, 303) and headers["Location"] == "/reservations/1002"
        finally:
            await first.close()
            await second.close()


@contextlib.asynccontextmanager
async def _naive(tmp_path):
    """The gateway in front of a PMS that redirects to `ReturnUrl` as given, with an
    operator who did not list that parameter (so only the relayed Location is judged)."""
    policy = load_policy("policies/default.yaml")
    policy = policy.model_copy(
        update={
            "login": policy.login.model_copy(update={"next_parameters": []}),
            "captcha": policy.captcha.model_copy(update={"when": []}),
        }
    )
    async with serve_app(naive_upstream.create_app()) as pms, login_env(tmp_path, policy=policy, pms_url=pms) as env:
        yield env


@pytest.mark.parametrize("value", ["/\\evil.example/phish", "\\/evil.example", "/\\/evil.example", "//evil.example", "http://evil.example/"])
async def test_an_off_site_location_after_login_never_reaches_the_browser(tmp_path, value):
    async with _naive(tmp_path) as env, aiohttp.ClientSession() as client:
        async with client.post(
            env.url + "/login",
            data={"username": "alice", "password": "alice-demo-pw", "ReturnUrl": value},
            headers={"Origin": env.url},
            allow_redirects=False,
        ) as response:
            location = response.headers.get("Location")
            cookies = response.headers.getall("Set-Cookie", [])
        assert location == "/login"  # not a successful login: its Location is neutralised
        assert not any(c.startswith(naive_upstream.SESSION_COOKIE) for c in cookies)


async def test_the_default_policy_refuses_returnurl_in_any_case(tmp_path):
    app = naive_upstream.create_app()
    async with serve_app(app) as pms, login_env(tmp_path, pms_url=pms) as env, aiohttp.ClientSession() as client:
        for name in ("ReturnUrl", "returnurl", "NEXT"):
            async with client.post(
                env.url + "/login",
                data={"username": "alice", "password": "alice-demo-pw", name: "/\\evil.example"},
                headers={"Origin": env.url},
                allow_redirects=False,
            ) as response:
                assert response.status == 400 and "Location" not in response.headers, name
    assert not any(path == "/login" for _, path, _ in app[naive_upstream.SEEN])
