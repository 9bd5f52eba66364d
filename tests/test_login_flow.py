"""Login through the gateway at the HTTP level: interception, TOTP, device sessions, vault."""

from __future__ import annotations

import asyncio

import pytest

from gateway.policy import load_policy
from tests.login_env import Browser, browser, env, login_env  # noqa: F401 (fixtures)


async def new_browser(env) -> Browser:
    return Browser(env)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def enrolled(env, browser: Browser, user: str = "alice") -> None:
    status, headers, _ = await browser.password(user)
    assert headers["Location"] == "/_gateway/2fa"
    await browser.enroll(user)


async def test_enrollment_then_login_reaches_reservations_without_pms_cookie(env, browser):
    status, headers, _ = await browser.request("GET", "/reservations")
    assert status == 303 and headers["Location"].startswith("/login?next=")
    await enrolled(env, browser)
    status, _, page = await browser.request("GET", "/reservations")
    assert status == 200 and "Reservations" in page
    assert all("PMSSESSID" not in c for c in browser.set_cookies)
    assert browser.cookie("PMSSESSID") is None and browser.cookie("gw_session")
    assert await env.pms_users_alive() == ["alice"]


async def test_wrong_password_passes_through_and_counts(env, browser):
    status, headers, page = await browser.password("alice", "wrong")
    assert status == 200 and "Invalid username or password" in page
    from gateway.risk.lockout import Lockouts

    assert await Lockouts(env.services.store, env.policy).failures("alice") == 1
    assert all("PMSSESSID" not in c for c in browser.set_cookies)


async def test_uppercase_and_spaces_are_the_same_user(env, browser):
    await enrolled(env, browser, "alice")
    other = Browser(env)
    try:
        status, headers, _ = await other.password("%20ALICE%20", "alice-demo-pw")
        assert headers["Location"] == "/_gateway/2fa"
        _, page = await other.challenge_form()
        assert "Signing in as alice." in page and 'name="code"' in page  # verify, not enrollment
    finally:
        await other.close()
    assert [u.name for u in await env.services.users.list()] == ["alice"]


async def test_replayed_and_earlier_totp_codes_are_refused(env, browser):
    await enrolled(env, browser)
    await browser.request("POST", "/_gateway/logout", data={})  # no csrf: refused, still signed in
    status, _, _ = await browser.login("alice")
    assert status in (302, 303)
    used = env.code("alice")
    second = Browser(env)
    try:
        await second.password("alice")
        status, _, page = await second.submit(action="verify", code=used)
        assert status == 401 and "already used" in page
        status, _, page = await second.submit(action="verify", code=env.code("alice", -1))
        assert status == 401
        env.clock.advance(30)
        status, _, _ = await second.submit(action="verify", code=env.code("alice"))
        assert status in (302, 303)
    finally:
        await second.close()


async def test_five_wrong_codes_end_pending_login_lock_user_and_end_pms_session(env, browser):
    await enrolled(env, browser)
    await browser.request("GET", "/logout")
    await wait_until(lambda: _none_alive(env))
    await browser.password("alice")
    for attempt in range(4):
        status, _, page = await browser.submit(action="verify", code="000000")
        assert status == 401 and f"{4 - attempt} attempt(s) left" in page
    csrf, _ = await browser.challenge_form()
    status, _, page = await browser.request("POST", "/_gateway/2fa", data={"csrf": csrf, "code": "000000"})
    assert status == 401 and "Too many wrong codes" in page
    status, _, _ = await browser.request("GET", "/_gateway/2fa")
    assert status == 303  # the pending login is gone
    await wait_until(lambda: _none_alive(env))  # the PMS session behind it was ended
    status, _, page = await browser.password("alice")
    assert status == 429  # five wrong codes locked the account


async def _none_alive(env) -> bool:
    return await env.pms_users_alive() == []


async def test_second_device_replaces_first_which_is_told_why(env, browser):
    await enrolled(env, browser)
    phone = Browser(env)
    try:
        status, _, _ = await phone.login("alice")
        assert status in (302, 303)
        status, _, page = await browser.request("GET", "/reservations")
        assert status == 401 and "signed in on another device" in page and "127.0.0.1" in page
        status, _, body = await browser.request("GET", "/api/refresh", headers={"Accept": "application/json"})
        assert status == 401
        status, _, page = await phone.request("GET", "/reservations")
        assert status == 200
        await wait_until(lambda: _alive_count(env, 1))
    finally:
        await phone.close()


async def _alive_count(env, count: int) -> bool:
    return len(await env.pms_sessions()) == count


async def test_idle_expiry_and_polling_does_not_keep_session_alive(env, browser):
    await enrolled(env, browser)
    for _ in range(6):  # 24 minutes of auto-refresh polling only
        env.clock.advance(4 * 60)
        status, _, _ = await browser.request("GET", "/api/refresh", headers={"Accept": "application/json"})
        assert status == 200
    env.clock.advance(2 * 60)  # 26 minutes since the last real activity
    status, headers, _ = await browser.request("GET", "/reservations")
    assert status == 303 and headers["Location"].startswith("/login")
    status, _, page = await browser.request("GET", headers["Location"])
    assert "signed out after a period of inactivity" in page
    await wait_until(lambda: _none_alive(env))


async def test_activity_keeps_session_alive_until_absolute_lifetime(env, browser):
    await enrolled(env, browser)
    for _ in range(30):  # 12.5 hours of activity every 25 minutes minus one
        env.clock.advance(24 * 60)
        status, _, _ = await browser.request("GET", "/reservations")
        if status != 200:
            break
    assert status == 303
    assert await env.sessions.sessions_of("alice") == []
    await wait_until(lambda: _none_alive(env))


async def test_sweep_ends_idle_sessions_without_requests(env, browser):
    await enrolled(env, browser)
    env.clock.advance(26 * 60)
    assert await env.sessions.sweep() == 1
    await wait_until(lambda: _none_alive(env))


async def test_logout_paths_end_both_sessions(env, browser):
    await enrolled(env, browser)
    status, headers, _ = await browser.request("GET", "/logout")
    assert status in (302, 303)
    await wait_until(lambda: _none_alive(env))
    status, _, _ = await browser.request("GET", "/reservations")
    assert status == 303
    await browser.login("alice")
    status, _, page = await browser.request("GET", "/_gateway/logout")
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    status, headers, _ = await browser.request("POST", "/_gateway/logout", data={"csrf": csrf})
    assert status == 303
    await wait_until(lambda: _none_alive(env))


async def test_deactivation_ends_sessions_at_once(env, browser):
    await enrolled(env, browser)
    await env.services.users.set_active("alice", False)
    await env.sessions.end_user("alice", "deactivated")
    status, headers, _ = await browser.request("GET", "/reservations")
    assert status == 303
    await wait_until(lambda: _none_alive(env))
    status, _, page = await browser.password("alice")
    assert status == 403


async def test_csrf_and_cross_origin_posts_refused(env, browser):
    await enrolled(env, browser)
    status, _, _ = await browser.request(
        "POST", "/reservations/1003/confirm", data={"csrf_token": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    status, _, _ = await browser.request(
        "POST", "/reservations/1003/confirm", data={"csrf_token": "x"}, headers={"Origin": "null"}
    )
    assert status == 403
    await browser.password("bob")
    status, _, _ = await browser.request("POST", "/_gateway/2fa", data={"action": "invite", "invite_code": "x"})
    assert status == 403  # gateway form without its CSRF token


async def test_open_redirect_targets_refused(env, browser):
    status, _, _ = await browser.password("alice", extra="&next=https://evil.example/")
    assert status == 400
    status, _, _ = await browser.password("alice", extra="&next=//evil.example/")
    assert status == 400
    status, headers, _ = await browser.password("alice", extra="&next=/reservations/1003")
    assert headers["Location"] == "/_gateway/2fa"


async def test_session_fixation_impossible(env, browser):
    browser.client.cookie_jar.update_cookies({"gw_session": "attacker-chosen"})
    await enrolled(env, browser)
    issued = [c.split(";")[0].split("=", 1)[1] for c in browser.set_cookies if c.startswith("gw_session=")]
    assert issued and all(value not in ("", "attacker-chosen") for value in issued[-1:])
    assert await env.sessions.get("attacker-chosen") is None
    assert await env.sessions.get(issued[-1]) is not None


async def test_duplicate_or_misplaced_credentials_refused(env, browser):
    status, _, _ = await browser.password("alice", extra="&username=bob")
    assert status == 400
    status, _, _ = await browser.password("alice", extra="&username[]=bob")
    assert status == 400
    status, _, _ = await browser.request("POST", "/login?password=x", data={"username": "alice"})
    assert status == 400
    await enrolled(env, browser)
    status, _, _ = await browser.request("POST", "/reservations/1003/confirm", data={"username": "bob", "password": "bob-demo-pw"})
    assert status == 400  # a password anywhere but the login form could swap the vault's identity


async def test_vaulted_cookie_updates_stay_with_their_session(env, browser):
    await enrolled(env, browser, "alice")
    other = Browser(env)
    try:
        status, _, _ = await other.password("bob")
        await other.enroll("bob")
        _, _, alice_page = await browser.request("GET", "/reservations")
        _, _, bob_page = await other.request("GET", "/reservations")
        assert "alice" in alice_page.lower() and "bob" in bob_page.lower()
    finally:
        await other.close()
    assert sorted(await env.pms_users_alive()) == ["alice", "bob"]


async def test_abandoned_pending_login_ends_the_pms_session(env, browser):
    from gateway.auth.challenge import ChallengePages

    status, headers, _ = await browser.password("alice")
    assert headers["Location"] == "/_gateway/2fa"
    assert await env.pms_users_alive() == ["alice"]  # the PMS accepted the password
    pages = next(a for a in env.addons if isinstance(a, ChallengePages))
    assert await pages.sweep() == 0
    env.clock.advance(301)
    assert await pages.sweep() == 1
    await wait_until(lambda: _none_alive(env))
    status, _, _ = await browser.request("GET", "/_gateway/2fa")
    assert status == 303


async def test_new_recovery_codes_need_a_current_code(env, browser):
    import re

    await enrolled(env, browser)
    status, _, page = await browser.request("GET", "/_gateway/account")
    assert status == 200 and "Recovery codes left: 10." in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, _, page = await browser.request("POST", "/_gateway/account", data={"csrf": csrf, "code": "123456"})
    assert status == 401 and 'id="recovery-codes"' not in page
    env.clock.advance(30)
    status, _, page = await browser.request("POST", "/_gateway/account", data={"csrf": csrf, "code": env.code("alice")})
    assert status == 200 and len(re.findall(r"<li>([^<]+)</li>", page)) == 10


async def test_recovery_code_login_tells_how_many_remain(env, browser):
    codes = None
    status, headers, _ = await browser.password("alice")
    codes = await browser.enroll("alice")
    await browser.request("GET", "/logout")
    await browser.password("alice")
    status, _, page = await browser.submit(action="recovery", recovery_code=codes[0])
    assert status == 200 and "You have 9 recovery code(s) left" in page
    status, _, _ = await browser.request("GET", "/reservations")
    assert status == 200
    await browser.request("GET", "/logout")
    await browser.password("alice")
    status, _, page = await browser.submit(action="recovery", recovery_code=codes[0])
    assert status == 401  # each code works once


def _policy_with(**sessions):
    policy = load_policy("policies/default.yaml")
    return policy.model_copy(update={"sessions": policy.sessions.model_copy(update=sessions)})


async def test_remember_device_skips_second_factor_only_where_allowed(tmp_path):
    async with login_env(tmp_path, policy=_policy_with(remember_device=30 * 86400)) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            await browser.request("GET", "/logout")
            await browser.password("alice")
            env.clock.advance(30)
            status, _, _ = await browser.submit(action="verify", code=env.code("alice"), remember="on")
            assert status in (302, 303) and browser.cookie("gw_remember")
            await browser.request("GET", "/logout")
            status, headers, _ = await browser.password("alice")
            assert status in (302, 303) and headers["Location"] == "/reservations"  # no 2FA step
            stranger = Browser(env)  # the remember cookie alone, without the device cookie, is useless
            stranger.client.cookie_jar.update_cookies({"gw_remember": browser.cookie("gw_remember")})
            status, headers, _ = await stranger.password("alice")
            assert headers["Location"] == "/_gateway/2fa"
            await stranger.close()
        finally:
            await browser.close()
    async with login_env(tmp_path / "strict") as env:  # default policy: remember_device false
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            await browser.request("GET", "/logout")
            await browser.password("alice")
            _, page = await browser.challenge_form()
            assert 'name="remember"' not in page
        finally:
            await browser.close()


async def test_refuse_new_device_keeps_the_first(tmp_path):
    async with login_env(tmp_path, policy=_policy_with(on_new_device="refuse")) as env:
        first, second = Browser(env), Browser(env)
        try:
            await first.password("alice")
            await first.enroll("alice")
            status, _, page = await second.login("alice")
            assert status == 409 and "already signed in on another device" in page
            status, _, _ = await first.request("GET", "/reservations")
            assert status == 200
            await wait_until(lambda: _alive_count(env, 1))  # the refused login's PMS session was ended
        finally:
            await first.close()
            await second.close()


async def test_open_websocket_is_closed_when_the_session_ends(env, browser):
    await enrolled(env, browser)
    ws = await browser.client.ws_connect(env.url.replace("http", "ws") + "/ws/echo", headers={"Origin": env.url})
    await ws.send_str("hello")
    assert (await ws.receive()).data == "hello"
    await env.sessions.end_user("alice", "deactivated")
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.type.name in ("CLOSE", "CLOSED", "CLOSING")
    await ws.close()


async def test_websocket_without_session_is_refused(env, browser):
    import aiohttp

    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await browser.client.ws_connect(env.url.replace("http", "ws") + "/ws/echo", headers={"Origin": env.url})
    assert info.value.status == 401


async def test_vault_all_cookies_except_an_allow_list(tmp_path):
    policy = load_policy("policies/default.yaml")
    policy = policy.model_copy(
        update={"login": policy.login.model_copy(update={"vault_all_cookies_except": ["pms_csrf", "PMSPRELOGIN"]})}
    )
    async with login_env(tmp_path, policy=policy) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            names = {c.split("=", 1)[0] for c in browser.set_cookies}
            assert "pms_csrf" in names and "PMSSESSID" not in names
            status, _, _ = await browser.request("GET", "/reservations")
            assert status == 200
        finally:
            await browser.close()


async def test_deactivated_during_second_step_gets_no_session(env, browser):
    await enrolled(env, browser)
    await browser.request("GET", "/logout")
    await browser.password("alice")
    await env.services.users.set_active("alice", False)
    env.clock.advance(30)
    status, _, page = await browser.submit(action="verify", code=env.code("alice"))
    assert status == 403 and "deactivated" in page
    assert browser.cookie("gw_session") in (None, "")
    await wait_until(lambda: _none_alive(env))


async def test_cookies_are_secure_behind_a_tls_terminating_proxy(tmp_path):
    import aiohttp

    class ProxiedBrowser(Browser):
        """Requests arrive from a trusted front proxy that ended TLS."""

        def __init__(self, env) -> None:
            super().__init__(env)
            self.client = aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[env.url])
            )

        async def request(self, method, path, **kwargs):
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-Forwarded-Proto", "https")
            if method != "GET":
                headers.setdefault("Origin", self.env.url.replace("http://", "https://"))
            return await super().request(method, path, headers=headers, **kwargs)

    async with login_env(tmp_path, config_overrides={"trusted_proxies": "[127.0.0.0/8]"}) as env:
        browser = ProxiedBrowser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
        finally:
            await browser.close()
        gateway_cookies = [c for c in browser.set_cookies if c.startswith("gw_")]
        assert gateway_cookies and all("; Secure" in c and "HttpOnly" in c for c in gateway_cookies)
        assert any(c.startswith("gw_session=") and "SameSite=Lax" in c for c in gateway_cookies)
    async with login_env(tmp_path / "plain") as env:  # plain http: Secure would lose the cookie
        browser = Browser(env)
        try:
            await browser.password("alice")
        finally:
            await browser.close()
        assert all("Secure" not in c for c in browser.set_cookies if c.startswith("gw_"))


def _policy_with_groups(**reception):
    policy = load_policy("policies/default.yaml")
    data = policy.model_dump(mode="json")
    data["groups"]["reception"].update(reception)
    data["networks"]["back_office"] = ["10.20.0.0/16"]
    return type(policy).model_validate(data)


async def test_group_network_refuses_login_before_the_password_is_forwarded(tmp_path):
    policy = _policy_with_groups(networks=["back_office"])
    async with login_env(tmp_path, policy=policy) as env:
        browser = Browser(env)
        try:
            status, _, page = await browser.password("alice")  # from 127.0.0.1: not back_office
            assert status == 403 and "may not be used from the network you are on" in page
            assert await env.pms_users_alive() == []  # the PMS never saw the password
            status, headers, _ = await browser.password("manager")  # another group: no network rule
            assert headers["Location"] == "/_gateway/2fa"
        finally:
            await browser.close()


async def test_group_access_rules_hide_whole_sections(tmp_path):
    policy = _policy_with_groups(access=[{"deny": "^/reports"}, {"allow": ".*"}])
    async with login_env(tmp_path, policy=policy) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            status, _, _ = await browser.request("GET", "/reservations")
            assert status == 200
            status, _, page = await browser.request("GET", "/reports")
            assert status == 403 and "Access denied" in page
            status, _, _ = await browser.request("GET", "//REPORTS/../reports/")  # same section, other spelling
            assert status in (400, 403)
        finally:
            await browser.close()


async def test_session_cookie_without_its_device_is_refused_and_ended(env, browser):
    import aiohttp

    await enrolled(env, browser)
    stolen = browser.cookie("gw_session")
    async with aiohttp.ClientSession() as thief:
        async with thief.get(env.url + "/reservations", headers={"Cookie": f"gw_session={stolen}"},
                             allow_redirects=False) as response:
            assert response.status == 303
    status, _, _ = await browser.request("GET", "/reservations")
    assert status == 303  # ended for the rightful browser too: it signs in again
    await wait_until(lambda: _none_alive(env))


async def test_bind_to_ip_refuses_a_session_from_another_address(tmp_path):
    policy = _policy_with(bind_to_ip=True)
    async with login_env(tmp_path, policy=policy, config_overrides={"trusted_proxies": "[127.0.0.0/8]"}) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            status, _, _ = await browser.request("GET", "/reservations", headers={"X-Forwarded-For": "127.0.0.1"})
            assert status == 200
            status, _, _ = await browser.request("GET", "/reservations", headers={"X-Forwarded-For": "203.0.113.7"})
            assert status == 303
        finally:
            await browser.close()
