"""Remember this browser, per group (issue 15, item 2). HTTP level: the login history says
`remembered_device`; turning `remember_device` off for the group deletes a member's
remember cookie at their next request, so the device stays ended when remembering is
allowed again; a shorter duration ends cookies issued longer ago. The browser test
(tests/test_browser_remember.py) shows the checkbox only where the group allows it."""

from __future__ import annotations

from gateway.audit.logins import recent_logins
from gateway.policy import load_policy
from gateway.policy.schema import Policy
from tests.login_env import Browser, login_env

DAY = 86400


def reception_remembers(value: str | bool) -> Policy:
    """The default policy (remember_device: false) with the reception group (alice, bob)
    overriding it; management (manager) keeps the default."""
    policy = load_policy("policies/default.yaml")
    data = policy.model_dump(mode="json")
    data["groups"]["reception"]["sessions"] = {"remember_device": value}
    return Policy.model_validate(data)


async def remembered_login(browser: Browser) -> None:
    """Password + second factor with "remember this browser" ticked."""
    env = browser.env
    await browser.password("alice")
    env.clock.advance(30)
    _, page = await browser.challenge_form()
    assert 'name="remember"' in page
    status, _, _ = await browser.submit(action="verify", code=env.code("alice"), remember="on")
    assert status in (302, 303) and browser.cookie("gw_remember")


async def remembered_then_signed_out(browser: Browser) -> None:
    """Enrolled, then a remembered login, then signed out: the browser holds the cookie."""
    await browser.password("alice")
    await browser.enroll("alice")
    await browser.request("GET", "/logout")
    await remembered_login(browser)
    await browser.request("GET", "/logout")


async def test_turning_remember_off_ends_the_remembered_device_at_the_next_request(tmp_path) -> None:
    async with login_env(tmp_path, policy=reception_remembers("30d")) as env:
        browser = Browser(env)
        try:
            await remembered_then_signed_out(browser)
            status, headers, _ = await browser.password("alice")
            assert headers["Location"] == "/reservations"  # no second factor
            history = await recent_logins(env.services.audit.login_history.database, "alice")
            assert [r["login_type"] for r in history if r["outcome"] == "success"][0] == "remembered_device"

            env.policy.current = reception_remembers(False)
            status, _, _ = await browser.request("GET", "/reservations")  # the next request
            assert status == 200  # the session goes on; the remembered device ends
            assert any(c.startswith("gw_remember=;") or c.startswith('gw_remember="";') for c in browser.set_cookies[-3:])
            assert browser.cookie("gw_remember") in (None, "")

            env.policy.current = reception_remembers("30d")  # allowed again: the device stays ended
            await browser.request("GET", "/logout")
            status, headers, _ = await browser.password("alice")
            assert headers["Location"] == "/_gateway/2fa"
        finally:
            await browser.close()


async def test_a_cookie_the_group_ended_is_deleted_at_the_next_login_too(tmp_path) -> None:
    """Signed out while the group turned remembering off: the login deletes the cookie."""
    async with login_env(tmp_path, policy=reception_remembers("30d")) as env:
        browser = Browser(env)
        try:
            await remembered_then_signed_out(browser)
            env.policy.current = reception_remembers(False)
            status, headers, _ = await browser.password("alice")
            assert headers["Location"] == "/_gateway/2fa"
            assert browser.cookie("gw_remember") in (None, "")
        finally:
            await browser.close()


async def test_a_shorter_duration_ends_older_cookies_and_other_groups_never_remember(tmp_path) -> None:
    async with login_env(tmp_path, policy=reception_remembers("30d")) as env:
        alice, manager = Browser(env), Browser(env)
        try:
            await alice.password("alice")
            await alice.enroll("alice")
            await alice.request("GET", "/logout")
            await remembered_login(alice)
            await alice.request("GET", "/logout")
            env.clock.advance(10 * DAY)
            env.policy.current = reception_remembers("7d")  # issued 10 days ago: past the new 7 days
            status, headers, _ = await alice.password("alice")
            assert headers["Location"] == "/_gateway/2fa"

            await manager.password("manager")  # management: no persistent login
            _, page = await manager.challenge_form()
            assert 'name="remember"' not in page
            await manager.enroll("manager")
            await manager.request("GET", "/logout")
            await manager.password("manager")
            env.clock.advance(30)
            status, _, _ = await manager.submit(action="verify", code=env.code("manager"), remember="on")
            assert status in (302, 303) and manager.cookie("gw_remember") is None  # a forged tick is ignored
        finally:
            await alice.close()
            await manager.close()
