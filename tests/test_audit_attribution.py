"""Whose request was it? Audit records name the user wherever the gateway knows them.

Ended sessions (idle, replaced, revoked), the second-factor pages of a pending login,
refusals inside a session before the session guard ran, and the gateway's own logout
calls to the PMS (sent with the session's own User-Agent).
"""

from __future__ import annotations

from aiohttp import web

from gateway.sessions.upstream_logout import UpstreamLogout
from tests.audit_wait import audited
from tests.harness import serve_app
from tests.login_env import Browser, login_env

AGENT = "FrontDesk-Browser/1.0 (attribution test)"


async def signed_in(env, user: str = "alice") -> Browser:
    browser = Browser(env)
    browser.client.headers["User-Agent"] = AGENT
    await browser.password(user)
    await browser.enroll(user)
    return browser


async def test_an_ended_session_is_audited_under_its_user_and_hash_with_the_reason(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            [session] = await env.sessions.sessions_of("alice")
            env.clock.advance(env.policy().sessions.idle_timeout + 1)
            status, _, _ = await browser.request("GET", "/reports")  # ends it: idle
            assert status == 303
        finally:
            await browser.close()
        records = await audited(env, lambda r: r["path"] == "/reports" and r["decision"] != "allowed")
        assert records[0]["reason"] == "no session (idle)"
        assert records[0]["user"] == "alice" and records[0]["session_hash"] == session.id_hash


async def test_second_factor_pages_carry_the_pending_logins_user(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await browser.password("bob")
            await browser.challenge_form()
        finally:
            await browser.close()
        records = await audited(env, lambda r: r["path"] == "/_gateway/2fa")
        assert records[0]["user"] == "bob"


async def test_a_refusal_before_the_guard_carries_the_sessions_user(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            status, _, _ = await browser.request(
                "POST", "/reservations/1001/confirm", headers={"Origin": "https://evil.example"}
            )
            assert status == 403
            status, _, _ = await browser.request(
                "POST", "/reservations/1001/confirm", data="password=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert status == 400
        finally:
            await browser.close()
        [session] = await env.sessions.sessions_of("alice")
        records = await audited(env, lambda r: r["path"] == "/reservations/1001/confirm")
        assert len(records) == 2 and all(r["decision"] != "allowed" for r in records)
        assert all(r["user"] == "alice" and r["session_hash"] == session.id_hash for r in records)


async def test_upstream_logout_is_audited_and_sends_the_sessions_user_agent(tmp_path):
    seen: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=302, headers={"Location": "/login"})

    recorder = web.Application()
    recorder.router.add_get("/logout", record)
    async with serve_app(recorder) as recorder_url, login_env(tmp_path) as env:
        browser = await signed_in(env)
        await browser.close()
        [session] = await env.sessions.sessions_of("alice")
        logout = next(a for a in env.addons if isinstance(a, UpstreamLogout))
        logout.base = recorder_url  # where this gateway's PMS logout calls go, to see them
        await env.sessions.end(session, "revoked")
        await env.sessions.drain()
        assert seen and seen[0]["User-Agent"] == AGENT and "PMSSESSID=" in seen[0]["Cookie"]
        records = await audited(env, lambda r: r["decision"] == "upstream_logout")
        assert records[0]["user"] == "alice" and records[0]["session_hash"] == session.id_hash
        assert records[0]["reason"] == "revoked" and records[0]["status"] == 302


async def test_a_replaced_session_is_audited_under_its_user(tmp_path):
    async with login_env(tmp_path) as env:
        first = await signed_in(env)
        second = Browser(env)
        try:
            [session] = await env.sessions.sessions_of("alice")
            await second.login("alice")  # one device only: the first browser's session is replaced
            status, _, _ = await first.request("GET", "/reservations")
            assert status == 401
        finally:
            await first.close()
            await second.close()
        records = await audited(env, lambda r: r["path"] == "/reservations" and r["decision"] == "denied")
        assert records[0]["reason"] == "no session (replaced)"
        assert records[0]["user"] == "alice" and records[0]["session_hash"] == session.id_hash
