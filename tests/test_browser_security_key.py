"""Security keys in a real Chromium, with its virtual authenticator (WebAuthn over CDP).

WebAuthn needs a secure context and refuses IP addresses as RP ids, so the browser uses
http://localhost:PORT (one of the test gateway's public URLs). Screenshots of every step
go to test-artifacts/browser/.
"""

from __future__ import annotations

import pyotp
import pytest

from tests.browser import BROWSER_TESTS, chromium, new_page, shot
from tests.login_env import login_env

pytestmark = BROWSER_TESTS


@pytest.fixture
async def page():
    async with chromium() as browser:
        page, errors = await new_page(browser)
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True,
        }})
        page.authenticator = (cdp, added["authenticatorId"])
        yield page
    assert not [e for e in errors if "Content Security Policy" in e or "Error" in e], errors


def local(env) -> str:
    return env.url.replace("127.0.0.1", "localhost")


async def credentials(page) -> list[dict]:
    cdp, authenticator_id = page.authenticator
    return (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id}))["credentials"]


async def password(page, base: str, user: str, secret: str) -> None:
    await page.goto(base + "/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", secret)
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url("**/_gateway/2fa")


async def test_add_a_security_key_then_sign_in_with_it(page, tmp_path):
    async with login_env(tmp_path) as env:
        base = local(env)
        await password(page, base, "alice", "alice-demo-pw")
        invite = await env.services.users.create_invite("alice")
        await page.fill("#invite_code", invite)
        await page.click("button[type=submit]")
        await page.wait_for_selector(".qr svg")
        secret = (await page.inner_text("#secret")).strip()
        assert await page.is_visible("#enroll-security-key")  # the alternative to the app
        await page.fill("#code", pyotp.TOTP(secret).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_selector("#recovery-codes")
        await page.click("button[type=submit]")
        await page.wait_for_url("**/reservations")

        await page.goto(base + "/_gateway/account")
        await page.wait_for_selector("#security-keys", state="visible")
        assert await page.is_visible("#security-key-empty")
        await shot(page, "sk-01-account-no-keys")
        env.clock.advance(30)
        await page.fill("#security-key-label", "Front desk key")
        await page.fill("#security-key-code", pyotp.TOTP(secret).at(env.clock()))
        await page.click("#add-security-key")
        await page.wait_for_selector("#security-key-list li .security-key-label")
        assert await page.inner_text("#security-key-list .security-key-label") == "Front desk key"
        assert "Security key added." in await page.inner_text("#security-key-status")
        await shot(page, "sk-02-account-key-added")
        [stored] = await env.services.users.security_keys("alice")
        assert stored.label == "Front desk key"
        [credential] = await credentials(page)
        assert credential["isResidentCredential"] and credential["rpId"] == "localhost"

        await page.goto(base + "/reservations")
        await page.click("a[href='/logout']")
        await page.wait_for_url("**/login**")

        await password(page, base, "alice", "alice-demo-pw")
        await page.wait_for_selector("#use-security-key", state="visible")
        await shot(page, "sk-03-challenge-with-key-button")
        await page.click("#use-security-key")
        await page.wait_for_url("**/reservations")
        assert "Reservations" in await page.content()
        await shot(page, "sk-04-reservations-via-key")
        [session] = await env.sessions.sessions_of("alice")
        assert session.login_type == "password+security_key"
        [stored] = await env.services.users.security_keys("alice")
        assert stored.last_used_at is not None
        assert await env.pms_users_alive() == ["alice"]


async def test_security_key_as_the_first_factor(page, tmp_path):
    async with login_env(tmp_path) as env:
        base = local(env)
        await password(page, base, "bob", "bob-demo-pw")
        await page.fill("#invite_code", await env.services.users.create_invite("bob"))
        await page.click("button[type=submit]")
        await page.wait_for_selector("#enroll-security-key", state="visible")
        await page.fill("#security-key-label", "Bob's key")
        await shot(page, "sk-05-enroll-choice")
        await page.click("#enroll-security-key")
        await page.wait_for_selector("#recovery-codes")
        await shot(page, "sk-06-enroll-key-recovery-codes")
        await page.click("button[type=submit]")
        await page.wait_for_url("**/reservations")
        record = await env.services.users.get("bob")
        assert record.has_security_key and not record.has_totp
        [session] = await env.sessions.sessions_of("bob")
        assert session.login_type == "password+security_key"
        # No authenticator app: new recovery codes are confirmed with the key itself.
        await page.goto(base + "/_gateway/account")
        await page.wait_for_selector("#security-key-new-codes", state="visible")
        assert await page.locator("form[action='/_gateway/account']").count() == 0
        await page.click("#security-key-new-codes")
        await page.wait_for_selector("#security-key-recovery-codes li")
        codes = await page.locator("#security-key-recovery-codes li").all_inner_texts()
        assert len(codes) == 10 and len(set(codes)) == 10
        await shot(page, "sk-07-new-recovery-codes-with-key")
