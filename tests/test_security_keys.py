"""Security keys (WebAuthn) at the HTTP level, with a software authenticator.

`SoftKey` answers the gateway's options the way a real authenticator and browser would
(P-256 key, "none" attestation, real signatures and counters), so py_webauthn's
verification runs for real; the Chromium virtual authenticator covers the browser side
in test_browser_security_key.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from gateway.auth.security_keys import clean_label, rp_id_for
from gateway.policy import load_policy
from gateway.risk.lockout import Lockouts
from tests.login_env import Browser, browser, env, login_env  # noqa: F401 (fixtures)

W = "/_gateway/webauthn/"


class SoftKey:
    """One credential on a software authenticator (user present and verified)."""

    def __init__(self, origin: str, rp_id: str | None = None, sign_count: int = 0) -> None:
        self.origin = origin
        self.rp_id = rp_id
        self.credential_id = os.urandom(32)
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.sign_count = sign_count
        self.user_handle: bytes | None = None

    def _cose_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, challenge: str, origin: str | None = None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def create(self, options: dict, *, origin: str | None = None) -> dict:
        rp_id = self.rp_id or options["rp"]["id"]
        self.rp_id = rp_id
        self.user_handle = base64url_to_bytes(options["user"]["id"])
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest() + bytes([0x45]) + struct.pack(">I", self.sign_count)
            + bytes(16) + struct.pack(">H", len(self.credential_id)) + self.credential_id + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["usb"],
            },
        }

    def get(self, options: dict, *, advance: int = 1, origin: str | None = None, user_handle: bytes | None = None) -> dict:
        self.sign_count += advance
        auth_data = hashlib.sha256(self.rp_id.encode()).digest() + bytes([0x05]) + struct.pack(">I", self.sign_count)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.private_key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        handle = user_handle or self.user_handle
        return {
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(handle) if handle else None,
            },
        }


async def call(browser: Browser, path: str, body: dict | None = None, **headers: str) -> tuple[int, dict]:
    status, _, text = await browser.request(
        "POST", W + path, json=body or {}, headers={"Accept": "application/json", **headers})
    return status, json.loads(text) if text.startswith("{") else {"text": text}


async def signed_in_with_totp(env, browser: Browser, user: str = "alice") -> None:
    await browser.password(user)
    await browser.enroll(user)


async def add_key(env, browser: Browser, key: SoftKey, label: str = "Blue key", user: str = "alice") -> dict:
    env.clock.advance(30)
    status, options = await call(browser, "account/register/options", {"code": env.code(user), "label": label})
    assert status == 200, options
    status, answer = await call(browser, "account/register", {"credential": key.create(options["publicKey"])})
    assert status == 200, answer
    return answer


async def key_login(env, browser: Browser, key: SoftKey, user: str = "alice", **get_args) -> tuple[int, dict]:
    status, headers, _ = await browser.password(user)
    assert headers.get("Location") == "/_gateway/2fa", (status, headers)
    status, options = await call(browser, "login/options")
    assert status == 200, options
    return await call(browser, "login", {"credential": key.get(options["publicKey"], **get_args)})


async def test_add_key_on_account_page_then_sign_in_with_it(env, browser):
    await signed_in_with_totp(env, browser)
    status, listing = await call(browser, "account/keys")
    assert status == 200 and listing == {"keys": [], "has_totp": True}

    status, body = await call(browser, "account/register/options", {"label": "Blue key"})
    assert status == 400 and body["error"] == "proof_required"
    status, body = await call(browser, "account/register/options", {"code": "000000"})
    assert status == 401 and body["error"] == "code_invalid"
    env.clock.advance(30)
    status, body = await call(browser, "account/register/options", {"code": env.code("alice"), "label": " Blue\x00 key "})
    assert status == 200
    options = body["publicKey"]
    assert options["rp"] == {"id": "127.0.0.1", "name": env.policy().property}
    assert options["user"]["name"] == "alice" and options["excludeCredentials"] == []
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    key = SoftKey(env.url)
    status, answer = await call(browser, "account/register", {"credential": key.create(options)})
    assert status == 200 and [k["label"] for k in answer["keys"]] == ["Blue key"]
    assert (await env.services.users.get("alice")).has_security_key

    # the same key again: excluded in the options, refused if sent anyway
    env.clock.advance(30)
    status, body = await call(browser, "account/register/options", {"code": env.code("alice")})
    assert [c["id"] for c in body["publicKey"]["excludeCredentials"]] == [bytes_to_base64url(key.credential_id)]
    status, body = await call(browser, "account/register", {"credential": key.create(body["publicKey"])})
    assert status == 400 and body["error"] == "security_key_already"

    await browser.request("GET", "/logout")
    other = Browser(env)
    try:
        await other.password("alice")
        status, body = await call(other, "login/status")
        assert body == {"available": True}
        status, options = await call(other, "login/options")
        assert [c["id"] for c in options["publicKey"]["allowCredentials"]] == [bytes_to_base64url(key.credential_id)]
        assert options["publicKey"]["rpId"] == "127.0.0.1"
        status, body = await call(other, "login", {"credential": key.get(options["publicKey"])})
        assert status == 200 and body == {"status": "ok", "location": "/reservations"}
        assert other.cookie("gw_session")
        status, _, page = await other.request("GET", "/reservations")
        assert status == 200 and "Reservations" in page
        [session] = await env.sessions.sessions_of("alice")
        assert session.login_type == "password+security_key"
        [stored] = await env.services.users.security_keys("alice")
        assert stored.sign_count == 1 and stored.last_used_at is not None
    finally:
        await other.close()


async def test_challenges_are_one_time_and_short_lived(env, browser):
    await signed_in_with_totp(env, browser)
    key = SoftKey(env.url)
    await add_key(env, browser, key)
    await browser.request("GET", "/logout")
    await browser.password("alice")
    status, options = await call(browser, "login/options")
    env.clock.advance(121)
    status, body = await call(browser, "login", {"credential": key.get(options["publicKey"])})
    assert status == 400 and body["error"] == "security_key_expired"  # not counted as a wrong attempt

    status, options = await call(browser, "login/options")
    assertion = key.get(options["publicKey"])
    status, body = await call(browser, "login", {"credential": assertion})
    assert status == 200
    # a replay of the same assertion in another pending login: that challenge is gone
    await browser.request("GET", "/logout")
    await browser.password("alice")
    status, body = await call(browser, "login", {"credential": assertion})
    assert status == 400 and body["error"] == "security_key_expired"


async def test_foreign_key_and_counter_going_back_count_as_wrong_attempts(env, browser):
    await signed_in_with_totp(env, browser)
    key = SoftKey(env.url)
    await add_key(env, browser, key)
    await browser.request("GET", "/logout")

    status, body = await key_login(env, browser, key, advance=5)
    assert status == 200
    await browser.request("GET", "/logout")

    stranger = SoftKey(env.url, rp_id="127.0.0.1")  # never registered
    status, body = await key_login(env, browser, stranger)
    assert status == 401 and body == {"error": "security_key_invalid", "attempts_left": 4}

    # a clone replaying an older counter value
    key.sign_count = 2
    status, options = await call(browser, "login/options")
    status, body = await call(browser, "login", {"credential": key.get(options["publicKey"])})
    assert status == 401 and body["attempts_left"] == 3
    [stored] = await env.services.users.security_keys("alice")
    assert stored.sign_count == 5

    # signed for another origin, or another user's handle
    status, options = await call(browser, "login/options")
    key.sign_count = 10
    status, body = await call(browser, "login", {"credential": key.get(options["publicKey"], origin="http://evil.test")})
    assert status == 401 and body["attempts_left"] == 2
    status, options = await call(browser, "login/options")
    status, body = await call(browser, "login", {"credential": key.get(options["publicKey"], user_handle=b"x" * 32)})
    assert status == 401 and body["attempts_left"] == 1
    status, options = await call(browser, "login/options")
    status, body = await call(browser, "login", {"credential": {"id": "garbage"}})
    assert status == 401 and body["error"] == "too_many_attempts"
    assert browser.cookie("gw_pending") in (None, "")
    status, body = await call(browser, "login/options")
    assert status == 401 and body["error"] == "no_pending_login"
    lock = await Lockouts(env.services.store, env.policy).current("alice", "203.0.113.1")
    assert lock is not None and lock.scope == "user"  # five wrong answers locked the account
    status, _, _ = await browser.password("alice")
    assert status == 429  # locked, like five wrong codes


async def test_endpoints_refuse_cross_origin_non_json_and_missing_cookies(env, browser):
    status, body = await call(browser, "login/options")
    assert status == 401 and body["error"] == "no_pending_login"
    status, body = await call(browser, "account/keys")
    assert status == 401 and body["error"] == "no_session"
    await signed_in_with_totp(env, browser)
    status, body = await call(browser, "account/keys", Origin="http://evil.test")
    assert status == 403
    status, _, _ = await browser.request("POST", W + "account/keys", data="{}",
                                         headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = await browser.request("GET", W + "account/keys")
    assert status in (404, 405)  # POST only
    status, body = await call(browser, "account/keys", {"padding": "x" * 70_000})
    assert status == 413
    status, body = await call(browser, "login/options")  # signed in, but no pending login
    assert status == 401


def test_rp_id_is_the_host_name_without_port_and_labels_are_cleaned():
    assert rp_id_for("localhost:8443") == "localhost"
    assert rp_id_for("PMS.Hotel.Example") == "pms.hotel.example"
    assert rp_id_for("[::1]:8080") == "::1"
    assert clean_label("  Front\u200b desk\x07 key ") == "Front desk key"
    assert clean_label("") is None and clean_label(42) is None and len(clean_label("k" * 500)) == 64


async def test_confirm_with_an_existing_key_then_remove_rules(env, browser):
    await signed_in_with_totp(env, browser)
    first = SoftKey(env.url)
    listing = await add_key(env, browser, first, "First")
    first_id = listing["keys"][0]["id"]

    # a second key, confirmed with the first one instead of a code
    status, options = await call(browser, "account/confirm/options")
    assert status == 200
    proof = first.get(options["publicKey"])
    second = SoftKey(env.url)
    status, body = await call(browser, "account/register/options", {"assertion": proof, "label": "Second"})
    assert status == 200
    status, body = await call(browser, "account/register", {"credential": second.create(body["publicKey"])})
    assert status == 200 and [k["label"] for k in body["keys"]] == ["First", "Second"]
    status, body = await call(browser, "account/register/options", {"assertion": proof})
    assert status == 400 and body["error"] == "security_key_expired"  # one assertion, one change

    status, body = await call(browser, "account/remove", {"id": first_id})
    assert status == 400 and body["error"] == "proof_required"
    env.clock.advance(30)
    status, body = await call(browser, "account/remove", {"id": first_id, "code": env.code("alice")})
    assert status == 200 and [k["label"] for k in body["keys"]] == ["Second"]
    status, body = await call(browser, "account/remove", {"id": first_id, "code": env.code("alice")})
    assert status == 404


async def test_wrong_proofs_on_the_account_page_are_limited(env, browser):
    await signed_in_with_totp(env, browser)
    for _ in range(5):
        status, body = await call(browser, "account/register/options", {"code": "123456"})
        assert status == 401
    env.clock.advance(30)
    status, body = await call(browser, "account/register/options", {"code": env.code("alice")})
    assert status == 429 and body["error"] == "security_key_wait"


async def test_security_key_as_first_factor_after_the_invite(env, browser):
    status, headers, _ = await browser.password("bob")
    assert headers["Location"] == "/_gateway/2fa"
    status, body = await call(browser, "enroll/options")
    assert status == 409 and body["error"] == "wrong_stage"  # the invite comes first
    invite = await env.services.users.create_invite("bob")
    status, _, page = await browser.submit(action="invite", invite_code=invite)
    assert status == 200 and 'id="security-key-enroll"' in page and "webauthn.js" in page
    status, body = await call(browser, "enroll/options", {"label": "Bob's key"})
    assert status == 200 and body["publicKey"]["user"]["name"] == "bob"
    key = SoftKey(env.url)
    status, body = await call(browser, "enroll", {"credential": key.create(body["publicKey"])})
    assert status == 200 and body == {"status": "ok", "location": "/_gateway/2fa"}
    _, page = await browser.challenge_form()
    assert 'id="recovery-codes"' in page
    status, headers, _ = await browser.submit(action="continue")
    assert status in (302, 303)
    [session] = await env.sessions.sessions_of("bob")
    assert session.login_type == "password+security_key"
    record = await env.services.users.get("bob")
    assert record.has_second_factor and not record.has_totp
    assert [k.label for k in await env.services.users.security_keys("bob")] == ["Bob's key"]

    status, listing = await call(browser, "account/keys")
    status, body = await call(browser, "account/remove", {"id": listing["keys"][0]["id"]})
    assert status == 409 and body["error"] == "security_key_last"  # the only factor stays

    await browser.request("GET", "/logout")
    status, headers, _ = await browser.password("bob")
    assert headers["Location"] == "/_gateway/2fa"  # verify stage now, no new invite
    _, page = await browser.challenge_form()
    assert 'name="code"' not in page and 'id="security-key-login"' in page  # no app code asked of a key-only user
    status, options = await call(browser, "login/options")
    status, body = await call(browser, "login", {"credential": key.get(options["publicKey"])})
    assert status == 200 and body["status"] == "ok"


async def test_pages_offer_keys_only_when_the_policy_allows(tmp_path):
    policy = load_policy("policies/default.yaml")
    totp_only = policy.model_copy(update={"second_factor": policy.second_factor.model_copy(update={"methods": ["totp"]})})
    async with login_env(tmp_path, policy=totp_only) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            status, body = await call(browser, "login/status")
            assert status == 404
            invite = await env.services.users.create_invite("alice")
            status, _, page = await browser.submit(action="invite", invite_code=invite)
            assert "security-key" not in page and "webauthn.js" not in page
        finally:
            await browser.close()
    async with login_env(tmp_path / "both") as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            await browser.request("GET", "/logout")
            await browser.password("alice")
            _, page = await browser.challenge_form()
            assert 'id="use-security-key"' in page and 'id="security-key-login" hidden' in page
            assert 'id="webauthn-messages"' in page and "Use security key" in page
            status, body = await call(browser, "login/status")
            assert body == {"available": False}  # no key yet: the button stays hidden
            status, body = await call(browser, "login/options")
            assert status == 400 and body["error"] == "security_key_none"
        finally:
            await browser.close()


async def test_key_only_user_renews_recovery_codes_with_the_key(env, browser):
    await browser.password("bob")
    invite = await env.services.users.create_invite("bob")
    await browser.submit(action="invite", invite_code=invite)
    key = SoftKey(env.url)
    status, body = await call(browser, "enroll/options", {"label": "Bob's key"})
    status, body = await call(browser, "enroll", {"credential": key.create(body["publicKey"])})
    _, page = await browser.challenge_form()
    first_codes = re.findall(r"<li>([^<]+)</li>", page)
    await browser.submit(action="continue")
    status, body = await call(browser, "account/recovery-codes")
    assert status == 400 and body["error"] == "proof_required"
    status, options = await call(browser, "account/confirm/options")
    status, body = await call(browser, "account/recovery-codes", {"assertion": key.get(options["publicKey"])})
    assert status == 200 and len(body["codes"]) == 10 and not set(body["codes"]) & set(first_codes)
    assert await env.services.users.use_recovery_code("bob", first_codes[0]) is None  # the old ones are gone
    assert await env.services.users.use_recovery_code("bob", body["codes"][0]) == 9
