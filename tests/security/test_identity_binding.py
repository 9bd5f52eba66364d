"""Issue 8, item 2: the session's identity is bound to the PMS's own answer.

A PMS endpoint that signs someone else in inside a session (the naive upstream's
`/switch-user` and JSON `/api/login`) must never give the session another user without
that user's second factor. With `login.identity` the gateway asks the PMS who is signed
in after every login and every change of the vaulted cookies, and ends a session the PMS
names another user for (both PMS sessions too), audited and alerted; without it, a vaulted
cookie set outside the login is dropped. Against the demo PMS: normal logins still work
with the check configured, and a login the PMS reads as another user is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.audit.query import AuditReader
from gateway.policy import load_policy
from gateway.policy.schema import LoginIdentity, Policy
from tests.harness import serve_app
from tests.login_env import Browser, LoginEnv, login_env, signed_in_without_csrf
from tests.security import naive_upstream

PATTERN = "Logged in as <b>([^<]+)</b>"


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def policy_for_naive(identity: LoginIdentity | None) -> Policy:
    """The default policy; the naive PMS shows its "Logged in as" line on `/`."""
    policy = load_policy("policies/default.yaml")
    login = policy.login.model_copy(update={"identity": identity or LoginIdentity()})
    return policy.model_copy(update={"login": login})


@contextlib.asynccontextmanager
async def naive_env(tmp_path, identity: LoginIdentity | None) -> AsyncIterator[tuple[LoginEnv, web.Application, list]]:
    """A gateway in front of the naive PMS; alerts go to a local webhook collected in a list."""
    pms = naive_upstream.create_app()
    alerts: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        alerts.append(json.loads(await request.read()))
        return web.Response(status=204)

    sink = web.Application()
    sink.router.add_post("/hook", hook)
    async with serve_app(pms) as pms_url, serve_app(sink) as hook_url:
        overrides = {"alerts_webhook__url": hook_url + "/hook"}
        async with login_env(tmp_path, policy=policy_for_naive(identity), pms_url=pms_url,
                             config_overrides=overrides) as env:
            yield env, pms, alerts


async def upstream_user(browser: Browser) -> str | None:
    """Who the PMS thinks is asking, as its /echo reports."""
    status, _, body = await browser.request("GET", "/echo")
    assert status == 200, status
    return json.loads(body)["user"]


async def audit_records(env: LoginEnv, path: str, method: str = "POST") -> list[dict]:
    reader = AuditReader(env.services.database, env.services.audit.keys)
    found: list[dict] = []

    async def present() -> bool:
        found[:] = [r async for r in reader.records() if r.get("path") == path and r.get("method") == method]
        return bool(found)

    await wait_until(present)
    return found


async def test_switch_user_ends_the_session_with_identity_configured(tmp_path):
    async with naive_env(tmp_path, LoginIdentity(path="/", pattern=PATTERN)) as (env, pms, alerts):
        browser = await signed_in_without_csrf(env)
        try:
            assert await upstream_user(browser) == "alice"
            alice_token = json.loads((await browser.request("GET", "/echo"))[2])["cookies"]["PMSSESSID"]
            status, _, page = await browser.request("POST", "/switch-user", data={"as": "manager"})
            assert status == 403 and "another user" in page
            assert not any(c.startswith("PMSSESSID") for c in browser.set_cookies)
            status, _, _ = await browser.request("GET", "/echo")
            assert status in (303, 401)  # no session any more: nothing reached the PMS as anyone
            # As manager the PMS answered only the gateway's identity read (and the logouts).
            as_manager = {(method, path) for method, path, user in pms[naive_upstream.SEEN] if user == "manager"}
            assert ("GET", "/") in as_manager and as_manager <= {("GET", "/"), ("GET", "/logout")}
            # Both PMS sessions are ended: the swapped one and alice's original.
            await wait_until(lambda: _no_sessions(pms))
            assert alice_token not in pms[naive_upstream.SESSIONS]
        finally:
            await browser.close()
        (record,) = await audit_records(env, "/switch-user")
        assert record["decision"] == "denied" and record["user"] == "alice"
        assert "identity mismatch" in record["reason"] and "manager" in record["reason"]
        await wait_until(lambda: _has(alerts, "identity_mismatch"))
        alert = next(a for a in alerts if a["event"] == "identity_mismatch")
        assert alert["user"] == "alice" and alert["pms_user"] == "manager"


async def test_json_login_inside_a_session_never_changes_its_user(tmp_path):
    async with naive_env(tmp_path, LoginIdentity(path="/", pattern=PATTERN)) as (env, pms, _):
        browser = await signed_in_without_csrf(env)
        try:
            status, _, _ = await browser.request(
                "POST", "/api/login", json={"username": "manager", "password": naive_upstream.PASSWORDS["manager"]}
            )
            assert status in (400, 403)  # a password outside the login form, or the identity check
            assert not any(user == "manager" for _, _, user in pms[naive_upstream.SEEN])
        finally:
            await browser.close()


async def test_without_identity_a_vaulted_cookie_set_outside_the_login_is_dropped(tmp_path):
    async with naive_env(tmp_path, None) as (env, pms, alerts):
        browser = await signed_in_without_csrf(env)
        try:
            status, headers, _ = await browser.request("POST", "/switch-user", data={"as": "manager"})
            assert status == 302  # the PMS's answer passes ...
            assert not any(c.startswith("PMSSESSID") for c in browser.set_cookies)  # ... without its cookie
            assert await upstream_user(browser) == "alice"  # the vault still holds alice's session
            status, _, page = await browser.request("GET", "/")
            assert status == 200 and "Logged in as <b>alice</b>" in page
            sloppy = await browser.request("GET", "/sloppy-cookie")
            assert sloppy[0] == 302 and await upstream_user(browser) == "alice"
        finally:
            await browser.close()
        assert not any(user == "manager" for _, _, user in pms[naive_upstream.SEEN])
        assert not alerts


async def test_identity_read_after_login_passes_for_the_right_user(tmp_path):
    async with naive_env(tmp_path, LoginIdentity(path="/", pattern=PATTERN)) as (env, pms, alerts):
        browser = await signed_in_without_csrf(env, "bob")
        try:
            assert await upstream_user(browser) == "bob"
        finally:
            await browser.close()
        assert ("GET", "/", "bob") in pms[naive_upstream.SEEN]  # the check itself, with bob's vault
        assert not alerts


# -- the demo PMS ------------------------------------------------------------------------


async def test_demo_login_works_with_identity_configured(tmp_path):
    policy = load_policy("policies/default.yaml")
    assert policy.login.identity.configured  # the demo's policy checks it
    async with login_env(tmp_path, policy=policy) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            status, _, page = await browser.request("GET", "/reservations")
            assert status == 200 and "Logged in as <b>alice</b>" in page
            assert await env.pms_users_alive() == ["alice"]
        finally:
            await browser.close()


async def test_demo_login_the_pms_reads_as_another_user_is_refused(tmp_path):
    """The demo PMS forgives case (`ALICE` signs in alice); a gateway told not to casefold
    would record a separate account `ALICE` with its own second factor and alice's PMS
    session. The PMS's own page says alice: the login is refused and its session ended."""
    policy = load_policy("policies/default.yaml")
    usernames = policy.login.usernames.model_copy(update={"casefold": False})
    policy = policy.model_copy(update={"login": policy.login.model_copy(update={"usernames": usernames})})
    async with login_env(tmp_path, policy=policy) as env:
        browser = Browser(env)
        try:
            status, headers, page = await browser.password("ALICE", "alice-demo-pw")
            assert status == 403 and "another user" in page
            assert browser.cookie("gw_pending") is None and browser.cookie("gw_session") is None
            await wait_until(lambda: _none_alive(env))
        finally:
            await browser.close()
        (record,) = await audit_records(env, "/login")
        assert record["decision"] == "refused" and "identity mismatch" in record["reason"]


async def _no_sessions(pms: web.Application) -> bool:
    return not pms[naive_upstream.SESSIONS]


async def _none_alive(env: LoginEnv) -> bool:
    return await env.pms_users_alive() == []


async def _has(alerts: list[dict], kind: str) -> bool:
    return any(a.get("event") == kind for a in alerts)


def test_identity_pattern_needs_exactly_one_group():
    with pytest.raises(ValueError, match="exactly one group"):
        LoginIdentity(path="/", pattern="(a)(b)")
    with pytest.raises(ValueError, match="both"):
        LoginIdentity(path="/")
