"""A JSON-login PMS, and two gateways sharing one Redis (as two workers or hosts would)."""

from __future__ import annotations

import contextlib

import aiohttp
import pyotp
from aiohttp import web

from gateway.policy.schema import LoginRule, LoginSuccessRule, Policy
from gateway.sessions.revocation import end_user_sessions
from tests.harness import serve_app
from tests.login_env import Browser, login_env, store_url_for


def json_pms() -> web.Application:
    """A single-page-app style PMS: JSON login answering 200 with a session cookie."""
    sessions: dict[str, str] = {}

    async def login(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("password") != "pw-" + body.get("user", ""):
            return web.json_response({"error": "invalid credentials"}, status=401)
        sid = f"sid-{len(sessions) + 1}"
        sessions[sid] = body["user"]
        response = web.json_response({"ok": True})
        response.set_cookie("SPASESSION", sid, httponly=True)
        return response

    async def me(request: web.Request) -> web.Response:
        user = sessions.get(request.cookies.get("SPASESSION", ""))
        return web.json_response({"user": user}, status=200 if user else 401)

    async def logout(request: web.Request) -> web.Response:
        sessions.pop(request.cookies.get("SPASESSION", ""), None)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/logout", logout)
    return app


JSON_POLICY = Policy(
    login=LoginRule(
        path="/api/login",
        format="json",
        username_field="user",
        password_field="password",
        success=LoginSuccessRule(status=[200], redirect_not_to=None, cookie_set="SPASESSION"),
        upstream_session_cookies=["SPASESSION"],
        logout_paths=["/api/logout"],
        public_paths=[],
    ),
    second_factor={"enrollment": "open"},
)


async def test_json_login_gets_json_answers_and_session(tmp_path):
    async with serve_app(json_pms()) as pms, login_env(tmp_path, policy=JSON_POLICY, pms_url=pms) as env:
        browser = Browser(env)
        try:
            status, _, body = await browser.request(
                "POST", "/api/login", json={"user": "carla", "password": "wrong"}
            )
            assert status == 401 and "invalid credentials" in body
            status, headers, body = await browser.request(
                "POST", "/api/login", json={"user": "carla", "password": "pw-carla"}
            )
            assert status == 200 and '"second_factor_required"' in body and '"/_gateway/2fa"' in body
            assert all("SPASESSION" not in c for c in browser.set_cookies)
            status, _, body = await browser.request(
                "POST", "/api/login", data='{"user": "carla", "user": "dana", "password": "pw-carla"}',
                headers={"Content-Type": "application/json"},
            )
            assert status == 400  # duplicate JSON key: two users in one request
            _, page = await browser.challenge_form()  # open enrollment shows the QR code
            secret = page.split('id="secret">')[1].split("<")[0]
            status, _, body = await browser.request(
                "POST", "/_gateway/2fa", json={"action": "enroll", "code": pyotp.TOTP(secret).at(env.clock())},
            )
            assert status == 200, body
            status, _, body = await browser.request("POST", "/_gateway/2fa", json={"action": "continue"})
            assert status == 200 and '"status": "ok"' in body
            status, _, body = await browser.request("GET", "/api/me", headers={"Accept": "application/json"})
            assert status == 200 and '"carla"' in body
        finally:
            await browser.close()


async def test_deactivation_in_one_gateway_refuses_next_request_in_the_other(tmp_path, redis_url):
    store_url = store_url_for("redis", redis_url)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(login_env(tmp_path, store_url))
        # Same PMS, same Redis, same operator key and database: a second worker or host.
        second = await stack.enter_async_context(login_env(tmp_path, store_url, pms_url=first.pms_url))
        browser_a = Browser(first)
        try:
            await browser_a.password("alice")
            await browser_a.enroll("alice")
            # The same browser, reaching the other gateway: its session and device cookies.
            session_cookie = f'{browser_a.cookie("gw_session")}; gw_device={browser_a.cookie("gw_device")}'
            status, _, _ = await browser_a.request("GET", "/reservations")
            assert status == 200
            async with aiohttp.ClientSession() as raw:
                async with raw.get(second.url + "/reservations", headers={"Cookie": f"gw_session={session_cookie}"},
                                   allow_redirects=False) as response:
                    assert response.status == 200  # the other gateway knows the session
            await first.services.users.set_active("alice", False)
            assert await end_user_sessions(first.services.store, "alice") == 1
            async with aiohttp.ClientSession() as raw:
                async with raw.get(second.url + "/reservations", headers={"Cookie": f"gw_session={session_cookie}"},
                                   allow_redirects=False) as response:
                    assert response.status == 303
        finally:
            await browser_a.close()
