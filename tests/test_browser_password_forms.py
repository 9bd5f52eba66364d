"""The PMS's other password forms in a real Chromium, through the gateway: re-authenticate
(and pass the gateway's second factor again) to erase a guest's data; reset a forgotten
password from the e-mailed link (through the gateway's SMTP relay) and log in with TOTP.

Screenshots of every step are kept in test-artifacts/browser/password-forms-*.png.
"""

from __future__ import annotations

import re

import pyotp

from gateway.policy import load_policy
from tests.browser import BROWSER_TESTS, page, shot  # noqa: F401 (page is a fixture)
from tests.login_env import Browser, login_env
from tests.test_login_flow import enrolled
from tests.test_password_forms import mail_world, until

pytestmark = BROWSER_TESTS


async def sign_in(page, env, user: str, password: str) -> None:
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url("**/_gateway/2fa")
    env.clock.advance(30)  # a fresh time step: a code is good once
    await page.fill("#code", pyotp.TOTP(env.secrets[user]).at(env.clock()))


async def test_reauthenticate_and_erase_a_guests_data(page, tmp_path):
    async with login_env(tmp_path, policy=load_policy("policies/default.yaml")) as env:
        helper = Browser(env)
        await enrolled(env, helper)  # alice has an authenticator app
        await helper.close()
        await page.goto(env.url + "/login")
        await sign_in(page, env, "alice", "alice-demo-pw")
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations")

        await page.goto(env.url + "/reservations/1001")
        await page.click("#erase")
        await page.wait_for_url("**/reservations/1001/erase")
        await page.fill("#password", "alice-demo-pw")
        await shot(page, "password-forms-01-reauth")
        await page.click("input[type=submit]")
        await page.wait_for_url("**/_gateway/2fa")  # the gateway's own second factor, again
        await shot(page, "password-forms-02-step-up")
        env.clock.advance(30)
        await page.fill("#code", pyotp.TOTP(env.secrets["alice"]).at(env.clock()))
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations/1001")
        text = await page.inner_text("body")
        assert "Erased guest" in text and "Oliver Bennett" not in text and "4111111111111111" not in text
        await shot(page, "password-forms-03-erased")
        cookies = {c["name"] for c in await page.context.cookies()}
        assert "PMSSESSID" not in cookies


async def test_reset_a_forgotten_password_from_the_emailed_link_then_log_in(page, tmp_path):
    async with mail_world(tmp_path) as env:
        helper = Browser(env)
        await enrolled(env, helper)
        await helper.close()
        await page.goto(env.url + "/login")
        await page.click("a[href='/password/forgot']")
        await page.wait_for_url("**/password/forgot")
        await page.fill("#username", "alice")
        await shot(page, "password-forms-04-forgot")
        await page.click("input[type=submit]")
        await page.wait_for_selector("#reset-sent")
        await until(lambda: env.sink.messages)
        mail = env.sink.messages.pop()
        assert mail["To"] == "alice@hotel-demo.example"
        link = re.search(r"(/password/reset/\S+)", mail.get_content()).group(1)

        await page.goto(env.url + link)
        await page.fill("#new_password", "a-new-secret-42")
        await page.fill("#new_password2", "a-new-secret-42")
        await shot(page, "password-forms-05-new-password")
        await page.click("input[type=submit]")
        await page.wait_for_url("**/login**")  # the PMS signed alice in; the gateway did not
        cookies = {c["name"] for c in await page.context.cookies()}
        assert "PMSSESSID" not in cookies and "gw_session" not in cookies
        await shot(page, "password-forms-06-back-at-login")
        await env.sessions.drain()
        assert await env.pms_users_alive() == []

        await sign_in(page, env, "alice", "a-new-secret-42")
        await shot(page, "password-forms-07-totp")
        await page.click("form:has(#code) button[type=submit]")
        await page.wait_for_url("**/reservations")
        assert "Logged in as" in await page.inner_text("body")
        await shot(page, "password-forms-08-signed-in")
