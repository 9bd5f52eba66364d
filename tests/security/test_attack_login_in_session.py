"""A login posted inside a live session must not reach the PMS with that session's cookies.

Found by the attack on issue 8: the session guard injected the vaulted PMS cookies into
every request of a live session, the login form's POST included. Many legacy PMSs sign a
user in within the session the request carries (PHP's `$_SESSION['user'] = ...` without
`session_regenerate_id()`): no new cookie is set, so the identity check (which runs when
the vaulted cookies change) never ran, and the session's own PMS session became the other
user's. Alice, knowing the manager's password but not the manager's second factor,
posted the manager's credentials from her own session, left the second-factor page, and
browsed as the manager. A login is a new identity: it goes up with no vaulted cookie.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import yaml
from aiohttp import web

from gateway.policy import load_policy
from tests.harness import serve_app
from tests.login_env import Browser, LoginEnv, login_env
from tests.security import naive_upstream

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@contextlib.asynccontextmanager
async def in_place_env(tmp_path) -> AsyncIterator[tuple[LoginEnv, web.Application]]:
    """The naive PMS, its login being the one that keeps the session id it came with."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"login": {
        "path": "/login-in-place",
        "public_paths": ["^/login-in-place$"],
        "identity": {"path": "/", "pattern": "Logged in as <b>([^<]+)</b>", "status": [200]},
    }}))
    pms = naive_upstream.create_app()
    async with serve_app(pms) as pms_url, login_env(
        tmp_path, policy=load_policy("policies/default.yaml", overlay), pms_url=pms_url
    ) as env:
        yield env, pms


async def _password(browser: Browser, user: str) -> tuple[int, dict, str]:
    body = f"username={user}&password={naive_upstream.PASSWORDS[user]}"
    return await browser.request("POST", "/login-in-place", data=body, headers=FORM)


async def test_a_login_inside_a_session_never_rebinds_the_sessions_pms_session(tmp_path):
    async with in_place_env(tmp_path) as (env, pms):
        alice = Browser(env)
        try:
            status, headers, _ = await _password(alice, "alice")
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            await alice.enroll("alice")
            status, _, page = await alice.request("GET", "/")
            assert status == 200 and "Logged in as <b>alice</b>" in page
            pms[naive_upstream.SEEN].clear()

            # The manager's password from alice's session; the second factor is never done.
            await _password(alice, "manager")
            login = [entry for entry in pms[naive_upstream.SEEN] if entry[1] == "/login-in-place"]
            assert login == [("POST", "/login-in-place", None)]  # no vaulted cookie went up with it

            status, _, page = await alice.request("GET", "/")
            assert status == 200 and "Logged in as <b>alice</b>" in page, page
            assert sorted(pms[naive_upstream.SESSIONS].values()).count("manager") <= 1
            assert "alice" in pms[naive_upstream.SESSIONS].values()
        finally:
            await alice.close()
