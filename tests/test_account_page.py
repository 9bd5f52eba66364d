"""Staff's own account page (/_gateway/account) over HTTP: adding a factor (authenticator
app, security key) or new recovery codes is refused without a fresh second factor and
works with one; the proof is bound to the session, lasts a few minutes and one change.
"""

from __future__ import annotations

import re

import pyotp

from gateway.auth.account_step_up import STEP_UP_SECONDS
from tests.login_env import Browser, browser, env  # noqa: F401 (fixtures)
from tests.test_security_keys import SoftKey, call

ACCOUNT = "/_gateway/account"


async def _signed_in(env, browser: Browser) -> str:
    """alice signed in with an authenticator app; the account page's form token."""
    await browser.password("alice")
    await browser.enroll("alice")
    env.clock.advance(30)  # the enrollment code's time step is spent
    status, _, page = await browser.request("GET", ACCOUNT)
    assert status == 200 and 'name="code"' in page
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _codes(page: str) -> list[str]:
    return re.findall(r"<li>([a-z0-9-]{14})</li>", page)


async def test_new_recovery_codes_refused_without_a_fresh_second_factor(env, browser):
    csrf = await _signed_in(env, browser)
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "action": "recovery_codes"})
    assert status == 401 and "Enter the current 6-digit code first." in page and not _codes(page)
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "code": "123456"})
    assert status == 401 and not _codes(page)
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "code": env.code("alice")})
    assert status == 200 and len(set(_codes(page))) == 10
    # One proof, one change: the next set of codes asks again.
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "action": "recovery_codes"})
    assert status == 401 and not _codes(page)


async def test_adding_an_authenticator_app_needs_a_fresh_second_factor(env, browser):
    csrf = await _signed_in(env, browser)
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "action": "totp_start"})
    assert status == 401 and 'id="secret"' not in page
    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_confirm", "new_code": "123456"})
    assert status == 401 and "Enter the current 6-digit code first." in page

    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_start", "code": env.code("alice")})
    assert status == 200 and "<svg" in page
    secret = re.search(r'id="secret">([A-Z2-7]+)</p>', page).group(1)
    new_app = pyotp.TOTP(secret)
    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_confirm", "new_code": "000000"})
    assert status == 401 and secret in page  # a wrong code from the new app: the QR code again
    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_confirm", "new_code": new_app.at(env.clock())})
    assert status == 200 and 'id="account-done"' in page
    assert (await env.services.users.verify_totp("alice", env.code("alice", 1))).reason == "invalid"  # old app gone

    # The step-up was spent; a proof expires unused after a few minutes.
    env.clock.advance(30)
    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_start", "code": new_app.at(env.clock())})
    assert status == 200 and 'id="secret"' in page
    later = re.search(r'id="secret">([A-Z2-7]+)</p>', page).group(1)
    env.clock.advance(STEP_UP_SECONDS + 1)
    status, _, page = await browser.request(
        "POST", ACCOUNT, data={"csrf": csrf, "action": "totp_confirm", "new_code": pyotp.TOTP(later).at(env.clock())})
    assert status == 401 and 'id="account-done"' not in page


async def test_adding_a_security_key_needs_a_fresh_second_factor(env, browser):
    await _signed_in(env, browser)
    key = SoftKey(env.url)
    status, body = await call(browser, "account/register/options", {"label": "Attacker's key"})
    assert status == 400 and body["error"] == "proof_required"
    status, body = await call(browser, "account/register/options", {"code": env.code("alice"), "label": "Blue"})
    assert status == 200
    options = body["publicKey"]
    env.clock.advance(STEP_UP_SECONDS + 1)  # the PC is left alone: the proof lapses
    status, body = await call(browser, "account/register", {"credential": key.create(options)})
    assert status == 400 and body["error"] == "proof_required"
    assert await env.services.users.security_keys("alice") == []

    status, body = await call(browser, "account/register/options", {"code": env.code("alice"), "label": "Blue"})
    assert status == 200
    status, body = await call(browser, "account/register", {"credential": key.create(body["publicKey"])})
    assert status == 200 and [k["label"] for k in body["keys"]] == ["Blue"]


async def test_a_key_proof_also_opens_the_page_form_for_one_change(env, browser):
    """The step-up is the session's, whichever way it was proved: a security key's assertion
    lets the page's form make one change without a code."""
    csrf = await _signed_in(env, browser)
    key = SoftKey(env.url)
    status, body = await call(browser, "account/register/options", {"code": env.code("alice")})
    await call(browser, "account/register", {"credential": key.create(body["publicKey"])})
    status, body = await call(browser, "account/confirm/options")
    assert status == 200
    # A wrong TOTP code does not open it; the key's assertion does (sent with a listing call).
    status, body = await call(browser, "account/recovery-codes", {"assertion": key.get(body["publicKey"])})
    assert status == 200 and len(body["codes"]) == 10  # that change spent it
    status, _, page = await browser.request("GET", ACCOUNT)
    assert 'id="step-up-fresh"' not in page and 'name="code"' in page
    status, _, page = await browser.request("POST", ACCOUNT, data={"csrf": csrf, "action": "recovery_codes"})
    assert status == 401
