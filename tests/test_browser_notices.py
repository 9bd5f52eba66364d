"""Notices that arrive (issue 10 item 5): why a user has to sign in again reaches the page
they see, not a script's poll; times are the property's; recovery codes are shown once.

The Chromium tests run the demo PMS's own polling script (refresh.js, an XHR every 30 s
to /api/refresh, an `idle_ignore_paths` path) under Playwright's clock, so the poll that
meets the idle-ended session is the page's real one. The HTTP-level tests pin each rule
of the notice selection. Screenshots: test-artifacts/browser/notice-*.png.
"""

from __future__ import annotations

import re

import pyotp

from tests.browser import BROWSER_TESTS, enroll_with_app, page, shot, submit_password  # noqa: F401 (page is a fixture)
from tests.login_env import Browser, login_env

IDLE = "signed out after a period of inactivity"
SIGNED_OUT = "You have been signed out"
XHR = {"X-Requested-With": "XMLHttpRequest", "Sec-Fetch-Dest": "empty"}
NAVIGATION = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate"}


async def _enrolled(env, browser: Browser, user: str = "alice") -> list[str]:
    status, headers, _ = await browser.password(user)
    assert headers["Location"] == "/_gateway/2fa", (status, headers)
    return await browser.enroll(user)


# -- HTTP level: the selection rules ---------------------------------------------------------


async def test_idle_ended_by_a_poll_is_told_on_the_next_page(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await _enrolled(env, browser)
            env.clock.advance(26 * 60)
            status, _, body = await browser.request("GET", "/api/refresh", headers=XHR)
            assert status == 401 and '"reason": "idle"' in body
            assert browser.cookie("gw_session") is None  # the poll's answer ended the session
            # The page polls on: those requests carry no session and must not overwrite the reason.
            status, _, body = await browser.request("GET", "/api/refresh", headers=XHR)
            assert status == 401 and '"reason": "required"' in body
            # A script that follows a redirect to the login page does not spend the notice either.
            status, headers, _ = await browser.request("GET", "/reservations", headers={"Sec-Fetch-Dest": "empty"})
            assert status == 303
            _, _, fetched = await browser.request("GET", "/login", headers={"Sec-Fetch-Dest": "empty"})
            assert "gateway-notice" not in fetched
            status, headers, _ = await browser.request("GET", "/reservations", headers=NAVIGATION)
            assert status == 303 and headers["Location"].startswith("/login")
            status, _, login = await browser.request("GET", headers["Location"], headers=NAVIGATION)
            assert status == 200 and IDLE in login
            # Said once: the next visit of the login page has no notice.
            _, _, again = await browser.request("GET", "/login", headers=NAVIGATION)
            assert "gateway-notice" not in again
        finally:
            await browser.close()


async def test_the_pms_logout_shows_signed_out(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await _enrolled(env, browser)
            status, headers, _ = await browser.request("GET", "/logout", headers=NAVIGATION)
            assert status in (302, 303)
            _, _, login = await browser.request("GET", "/login", headers=NAVIGATION)
            assert SIGNED_OUT in login and IDLE not in login
        finally:
            await browser.close()


async def test_signed_in_elsewhere_in_the_property_time_zone(tmp_path):
    from gateway.policy import load_policy

    policy = load_policy("policies/default.yaml").model_copy(update={"property_timezone": "Asia/Kathmandu"})
    async with login_env(tmp_path, policy=policy) as env:
        desk, phone = Browser(env), Browser(env)
        try:
            await _enrolled(env, desk)
            env.clock.advance(60)
            status, _, _ = await phone.login("alice")
            assert status in (302, 303)
            status, _, page_ = await desk.request("GET", "/reservations", headers=NAVIGATION)
            assert status == 401 and "another device" in page_
            shown = re.search(r"at (\d{4}-\d\d-\d\d \d\d:\d\d) ([^ ]+) from", page_)
            assert shown is not None, page_
            from datetime import datetime
            from zoneinfo import ZoneInfo

            # Kathmandu is UTC+05:45: no other zone the test machine might be in gives this minute.
            expected = datetime.fromtimestamp(env.clock(), ZoneInfo("Asia/Kathmandu"))
            assert shown.group(1) == expected.strftime("%Y-%m-%d %H:%M")
            assert "UTC" not in shown.group(2)
        finally:
            await desk.close()
            await phone.close()


async def test_recovery_codes_are_shown_once(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            codes = await _enrolled_until_codes(env, browser)
            assert len(codes) == 10
            for _ in range(2):  # a reload, a second tab
                status, headers, page_ = await browser.request("GET", "/_gateway/2fa", headers=NAVIGATION)
                assert status == 200 and headers["Cache-Control"] == "no-store"
                assert not any(code in page_ for code in codes)
                assert "recovery-codes-shown" in page_
            status, _, _ = await browser.submit(action="continue")
            assert status in (302, 303)
            status, _, _ = await browser.request("GET", "/reservations")
            assert status == 200
        finally:
            await browser.close()


async def _enrolled_until_codes(env, browser: Browser) -> list[str]:
    """Password, invite, first code: the recovery codes page, not yet continued."""
    await browser.password("alice")
    invite = await env.services.users.create_invite("alice")
    _, _, page_ = await browser.submit(action="invite", invite_code=invite)
    secret = re.search(r'<p class="secret" id="secret">([A-Z2-7]+)</p>', page_).group(1)
    status, headers, page_ = await browser.submit(action="enroll", code=pyotp.TOTP(secret).at(env.clock()))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    return re.findall(r"<li>([^<]+)</li>", page_)


# -- Chromium: the demo's own polling page ---------------------------------------------------


async def _sign_in(page, env) -> None:
    await page.goto(env.url + "/reservations")
    await submit_password(page, "alice")
    await enroll_with_app(page, env, "alice")
    await page.reload()  # the codes are not shown again
    assert await page.locator("#recovery-codes").count() == 0
    assert "shown once" in await page.inner_text("#recovery-codes-shown")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/reservations")


async def test_browser_idle_timeout_on_a_polling_page(page, tmp_path):
    async with login_env(tmp_path) as env:
        await page.clock.install()
        await _sign_in(page, env)
        env.clock.advance(26 * 60)  # the gateway's clock: the session is now idle
        for _ in range(2):  # refresh.js polls every 30 s; the first poll meets the idle session
            async with page.expect_response("**/api/refresh") as polled:
                await page.clock.run_for(31_000)
            assert (await polled.value).status == 401
        await shot(page, "notice-01-polling-page-after-idle")
        await page.goto(env.url + "/reservations")
        await page.wait_for_url("**/login**")
        assert IDLE in await page.inner_text("#gateway-notice")
        await shot(page, "notice-02-inactivity")


async def test_browser_logout_shows_signed_out(page, tmp_path):
    async with login_env(tmp_path) as env:
        await _sign_in(page, env)
        await page.click("a[href='/logout']")
        await page.wait_for_url("**/login**")
        assert SIGNED_OUT in await page.inner_text("#gateway-notice")
        await shot(page, "notice-03-signed-out")


for _test in (test_browser_idle_timeout_on_a_polling_page, test_browser_logout_shows_signed_out):
    for _mark in BROWSER_TESTS:
        _mark(_test)
