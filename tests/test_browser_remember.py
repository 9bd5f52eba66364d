"""Remember this browser in a real Chromium (issue 15, item 2): a group without persistent
login never sees the checkbox; in one with it, ticking it skips the second factor at the
next login from that browser, and the login history says `remembered_device`.
Screenshots are kept in test-artifacts/browser/ for a human to look at."""

from __future__ import annotations

import pyotp

from gateway.audit.logins import recent_logins
from tests.browser import BROWSER_TESTS, browser, new_page, shot  # noqa: F401 (browser is a fixture)
from tests.login_env import Browser, login_env
from tests.test_remember_device import reception_remembers

pytestmark = BROWSER_TESTS


async def sign_in(page, env, user: str, password: str) -> None:
    await page.goto(env.url + "/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit], input[type=submit]")


async def test_checkbox_only_where_the_group_allows_and_the_next_login_skips_2fa(browser, tmp_path) -> None:
    async with login_env(tmp_path, policy=reception_remembers("30d")) as env:
        for user in ("alice", "manager"):  # enrolled over HTTP; the browser does the logins
            enrolling = Browser(env)
            try:
                await enrolling.password(user)
                await enrolling.enroll(user)
            finally:
                await enrolling.close()
        env.clock.advance(30)

        # management: remember_device false (the policy-wide default)
        page, errors = await new_page(browser)
        await sign_in(page, env, "manager", "manager-demo-pw")
        await page.wait_for_url("**/_gateway/2fa")
        assert await page.locator("#code").is_visible()
        assert await page.locator("input[name=remember]").count() == 0
        await shot(page, "remember-01-management-no-checkbox")
        await page.fill("#code", pyotp.TOTP(env.secrets["manager"]).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations")
        await page.context.close()

        # reception: remember_device 30d
        page, errors = await new_page(browser)
        await sign_in(page, env, "alice", "alice-demo-pw")
        await page.wait_for_url("**/_gateway/2fa")
        checkbox = page.locator("input[name=remember]")
        assert await checkbox.is_visible()
        await checkbox.check()
        await shot(page, "remember-02-reception-checkbox-ticked")
        await page.fill("#code", pyotp.TOTP(env.secrets["alice"]).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations")
        assert "gw_remember" in {c["name"] for c in await page.context.cookies()}

        await page.click("a[href='/logout']")
        await page.wait_for_url("**/login**")
        await sign_in(page, env, "alice", "alice-demo-pw")
        await page.wait_for_url("**/reservations")  # straight in: no second factor
        assert "Reservations" in await page.content()
        await shot(page, "remember-03-reception-next-login-without-2fa")
        assert not [e for e in errors if "Content Security Policy" in e], errors
        await page.context.close()

        history = await recent_logins(env.services.audit.login_history.database)
        successes = [(r["username"], r["login_type"]) for r in history if r["outcome"] == "success"]
        assert successes[0] == ("alice", "remembered_device")
        assert ("alice", "password+totp") in successes[1:] and ("manager", "password+totp") in successes
        assert [r for r in successes if r == ("manager", "remembered_device")] == []
