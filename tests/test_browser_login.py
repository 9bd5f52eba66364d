"""A person logging in through the gateway, in a real Chromium (Debian's, via Playwright).

Screenshots of every step are kept in test-artifacts/browser/ for a human to look at.
"""

from __future__ import annotations

import pyotp

from tests.browser import ARTIFACTS, BROWSER_TESTS, page, shot  # noqa: F401 (page is a fixture)
from tests.login_env import login_env

pytestmark = BROWSER_TESTS


async def test_enroll_by_invite_then_log_out_and_in_again(page, tmp_path):
    async with login_env(tmp_path) as env:
        await page.goto(env.url + "/reservations")
        assert "/login" in page.url
        assert "Please sign in to continue." in await page.inner_text("#gateway-notice")
        await page.fill("input[name=username]", "alice")
        await page.fill("input[name=password]", "alice-demo-pw")
        await shot(page, "01-pms-login")
        await page.click("button[type=submit], input[type=submit]")
        await page.wait_for_url("**/_gateway/2fa")
        await shot(page, "02-invite-code")

        invite = await env.services.users.create_invite("alice")
        await page.fill("#invite_code", invite)
        await page.click("button[type=submit]")
        await page.wait_for_selector(".qr svg")
        secret = (await page.inner_text("#secret")).strip()
        await shot(page, "03-qr-enrollment")
        await page.fill("#code", pyotp.TOTP(secret).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_selector("#recovery-codes")
        codes = await page.locator("#recovery-codes li").all_inner_texts()
        assert len(codes) == 10 and len(set(codes)) == 10
        await shot(page, "04-recovery-codes")
        await page.click("button[type=submit]")
        await page.wait_for_url("**/reservations")
        assert "Reservations" in await page.content()
        await shot(page, "05-reservations")

        await page.click("a[href='/logout']")
        await page.wait_for_url("**/login**")
        await shot(page, "06-after-logout")
        cookies = {c["name"] for c in await page.context.cookies()}
        assert "PMSSESSID" not in cookies and "gw_session" not in cookies

        env.clock.advance(30)  # the enrollment code's time step may not be used again
        await page.fill("input[name=username]", "alice")
        await page.fill("input[name=password]", "alice-demo-pw")
        await page.click("button[type=submit], input[type=submit]")
        await page.wait_for_url("**/_gateway/2fa")
        await shot(page, "07-totp-step")
        await page.fill("#code", pyotp.TOTP(secret).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations")
        await shot(page, "08-reservations-again")
        assert await env.pms_users_alive() == ["alice"]


async def test_pages_follow_the_browser_language(page, tmp_path):
    async with login_env(tmp_path) as env:
        for language, expected in (("fr-FR", "Deuxième étape"), ("de-DE", "Zweiter Schritt"), ("cs-CZ", "Druhý krok")):
            context = await page.context.browser.new_context(locale=language)
            other = await context.new_page()
            await other.goto(env.url + "/login")
            await other.fill("input[name=username]", "bob")
            await other.fill("input[name=password]", "bob-demo-pw")
            await other.click("button[type=submit], input[type=submit]")
            await other.wait_for_url("**/_gateway/2fa")
            assert expected in await other.inner_text("h1")
            await other.screenshot(path=str(ARTIFACTS / f"challenge-{language}.png"))
            await context.close()
