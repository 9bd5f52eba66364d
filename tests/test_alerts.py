"""Alerts: new-address e-mails reach a real SMTP server once per new address, with the
city when known, through a real login (password + TOTP) at a real gateway; lockouts
alert; duplicates and floods are throttled; the webhook is signed."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from gateway.config import AlertsWebhookSettings, SmtpSettings
from gateway.notify.alerter import Alerter
from gateway.notify.email import EmailSender
from gateway.notify.throttle import AlertThrottle
from gateway.notify.webhook import SIGNATURE_HEADER, WebhookSender
from gateway.policy import load_policy
from gateway.policy.schema import AlertsPolicy, CaptchaPolicy, Policy
from gateway.redact.outbound_audit import OutboundRecord
from gateway.risk.geoip import GeoInfo
from tests.harness import free_port, serve_app
from tests.login_env import Browser, login_env

GEOIP = Path(__file__).parent / "data" / "geoip"


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


class BrowserAt(Browser):
    """A browser behind a front proxy that reports `address` as the client."""

    address = "127.0.0.1"

    async def request(self, method: str, path: str, **kwargs):
        kwargs.setdefault("headers", {})["X-Forwarded-For"] = self.address
        return await super().request(method, path, **kwargs)


async def wait_for(inbox: Inbox, count: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(inbox.messages) < count:
        assert asyncio.get_running_loop().time() < deadline, [m["Subject"] for m in inbox.messages]
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # and nothing more arrives


async def test_new_address_and_lockout_emails_from_real_logins(smtp, tmp_path: Path) -> None:
    inbox, port = smtp
    policy = load_policy("policies/default.yaml")
    policy = policy.model_copy(update={
        "alerts": AlertsPolicy(email_to=["it@hotel.example"], new_ip_on_first_login=True),
        "captcha": CaptchaPolicy(when=[]),  # so repeated failures reach the lockout
    })
    overrides = {"smtp__host": "127.0.0.1", "smtp__port": str(port), "smtp__sender": "gateway@hotel.example",
                 "geoip__city": str(GEOIP / "GeoIP2-City-Test.mmdb"), "geoip__asn": str(GEOIP / "GeoLite2-ASN-Test.mmdb"),
                 "trusted_proxies": "[127.0.0.1/32]"}
    async with login_env(tmp_path, policy=policy, config_overrides=overrides) as env:
        browser = BrowserAt(env)
        try:
            browser.address = "81.2.69.160"  # London
            status, headers, _ = await browser.password("alice")
            assert headers["Location"] == "/_gateway/2fa"
            await browser.enroll("alice")
            await wait_for(inbox, 1)
            for address in ("81.2.69.160", "89.160.20.112", "89.160.20.112", "10.20.30.40", "81.2.69.160"):
                browser.address = address
                status, headers, page = await browser.login("alice")
                assert status in (302, 303), page
            await wait_for(inbox, 3)
        finally:
            await browser.close()
        subjects = [m["Subject"] for m in inbox.messages]
        assert subjects == [
            "New sign-in address for alice: 81.2.69.160 in London, GB",
            "New sign-in address for alice: 89.160.20.112 in Linköping, SE",
            "New sign-in address for alice: 10.20.30.40",
        ]
        london = inbox.messages[0]
        assert london["To"] == "it@hotel.example" and london["From"] == "gateway@hotel.example"
        body = london.get_content()
        assert "Address: 81.2.69.160 (London, GB)" in body and "alice" in body
        assert "Network: AS29518 Bredband2 AB" in inbox.messages[1].get_content()
        history = await env_logins(env)
        assert [(r["ip"], r["new_ip"], r["city"]) for r in history if r["outcome"] == "success"] == [
            ("81.2.69.160", True, "London"), ("81.2.69.160", False, "London"), ("89.160.20.112", True, "Linköping"),
            ("89.160.20.112", False, "Linköping"), ("10.20.30.40", True, None), ("81.2.69.160", False, "London")]

        bob = BrowserAt(env)
        bob.address = "2.125.160.216"
        try:
            for _ in range(policy.lockout.per_user.failures):
                await bob.password("bob", "wrong-password")
        finally:
            await bob.close()
        await wait_for(inbox, 4)
        assert inbox.messages[3]["Subject"] == "Sign-in lockout for bob from 2.125.160.216"
        assert "Address: 2.125.160.216 (Boxford, GB)" in inbox.messages[3].get_content()


async def env_logins(env) -> list[dict]:
    from gateway.audit.logins import recent_logins

    return list(reversed(await recent_logins(env.services.database, "alice")))


# -- throttling ---------------------------------------------------------------------------
def test_throttle_dedupes_per_key_and_caps_per_hour() -> None:
    now = [0.0]
    throttle = AlertThrottle(lambda: now[0])
    key = ("new_ip_login", "alice", "1.2.3.4")
    assert throttle.admit(key, 600, 3)
    assert not throttle.admit(key, 600, 3)  # duplicate within the interval
    now[0] = 601
    assert throttle.admit(key, 600, 3)  # interval passed
    assert throttle.admit(("lockout", "bob", "5.6.7.8"), 600, 3)
    assert not throttle.admit(("lockout", "carol", "5.6.7.8"), 600, 3)  # fourth in the hour
    assert throttle.take_suppressed() == 1 and throttle.take_suppressed() == 0
    now[0] = 3601
    assert throttle.admit(("lockout", "carol", "5.6.7.8"), 600, 3)


async def test_nat_flood_is_capped_and_the_count_reported(smtp) -> None:
    inbox, port = smtp
    policy = Policy(alerts=AlertsPolicy(email_to=["it@hotel.example"], max_per_hour=2,
                                        on=["new_ip_login", "lockout", "every_login"]))
    alerter = Alerter(lambda: policy, EmailSender(SmtpSettings(host="127.0.0.1", port=port),
                                                  lambda: policy.alerts.email_to))
    try:
        for user in ("u1", "u2", "u3", "u4", "u1"):  # one NAT address, many users
            await alerter.lockout(user, "192.0.2.10")
        await alerter.drain()
        assert len(inbox.messages) == 2
        policy = Policy(alerts=AlertsPolicy(email_to=["it@hotel.example"], max_per_hour=10))
        await alerter.new_ip_login("u5", "192.0.2.11", GeoInfo(city="London", country="GB"))
        await alerter.drain()
        assert len(inbox.messages) == 3
        assert any("2 further alert(s) were not sent" in m.get_content() for m in inbox.messages)
    finally:
        await alerter.close()


async def test_policy_chooses_which_events_alert(smtp) -> None:
    inbox, port = smtp
    policy = Policy(alerts=AlertsPolicy(email_to=["it@hotel.example"], on=["lockout"]))
    alerter = Alerter(lambda: policy, EmailSender(SmtpSettings(host="127.0.0.1", port=port), lambda: ["it@x.example"]))
    try:
        assert not await alerter.new_ip_login("alice", "192.0.2.1")
        assert not await alerter.login("alice", "192.0.2.1")
        assert await alerter.lockout("alice", "192.0.2.1", "user")
        await alerter.drain()
        assert [m["Subject"] for m in inbox.messages] == ["Sign-in lockout for alice from 192.0.2.1"]
    finally:
        await alerter.close()


# -- webhook ------------------------------------------------------------------------------
async def test_webhook_is_signed_and_carries_no_guest_data() -> None:
    received: list[tuple[bytes, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_app(app) as url:
        policy = Policy(alerts=AlertsPolicy(on=["blocked_notification", "new_ip_login"]))
        webhook = WebhookSender(AlertsWebhookSettings(url=url + "/hook", secret="s3cret"))
        alerter = Alerter(lambda: policy, None, webhook, instance_id="gw-1")
        try:
            record = OutboundRecord("sms", "api.sms.example", {"card": 1, "passport": 2}, "blocked", "leftover card")
            assert await alerter.blocked_notification(record)
            await alerter.new_ip_login("alice", "81.2.69.160", GeoInfo(city="London", country="GB"))
            await alerter.publish({"event": "audit_chain_head", "instance_id": "gw-1", "seq": 5, "mac": "ab"})
            await alerter.drain()
        finally:
            await alerter.close()
    assert len(received) == 3
    for body, headers in received:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    blocked = json.loads(received[0][0])
    assert blocked["event"] == "blocked_notification" and blocked["detectors"] == {"card": 1, "passport": 2}
    assert blocked["instance_id"] == "gw-1" and received[0][1]["X-Gateway-Event"] == "blocked_notification"
    assert json.loads(received[1][0])["city"] == "London"
    assert json.loads(received[2][0])["event"] == "audit_chain_head"


async def test_unreachable_mail_server_never_blocks_the_caller() -> None:
    policy = Policy(alerts=AlertsPolicy(email_to=["it@hotel.example"]))
    alerter = Alerter(lambda: policy, EmailSender(SmtpSettings(host="127.0.0.1", port=free_port()),
                                                  lambda: policy.alerts.email_to))
    started = asyncio.get_running_loop().time()
    assert await alerter.lockout("alice", "192.0.2.1")
    assert asyncio.get_running_loop().time() - started < 0.1
    await asyncio.sleep(0.2)  # the first attempt fails in the background
    await alerter.close(timeout=0.1)  # gives up on the retries, never raises
