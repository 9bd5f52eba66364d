"""End to end: the demo PMS confirms a booking; the e-mail goes through the SMTP relay to
a real SMTP server, the SMS through the egress proxy (reverse mode, own process) to an
HTTPS SMS provider. Both arrive without the card and passport numbers the PMS put in."""

from __future__ import annotations

import re

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from gateway.demo import DEMO_USERS, DemoSettings, create_app
from gateway.redact.egress import EgressSupervisor
from gateway.redact.engine import Redactor
from gateway.redact.policy import NotificationsPolicy
from gateway.redact.settings import EgressSettings, SmarthostSettings, SmtpRelaySettings
from gateway.redact.smtp_relay import start_smtp_relay
from tests.notification_fixtures import CARD, NOTIFICATIONS, PASSPORT, PHONE
from tests.test_egress import FakeSmsProvider, free_port, self_signed_cert
from tests.test_smtp_relay import Audit, Sink, delivery_for, start_sink

SID, TOKEN = "ACe2e0123456789", "e2e-token"


@pytest.fixture
async def world(tmp_path):
    """Smarthost port (nothing listening yet), relay, egress child, SMS provider, demo PMS."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"notifications": NOTIFICATIONS}))
    audit = Audit()

    smarthost_port = free_port()
    relay_settings = SmtpRelaySettings(enabled=True, port=0, smarthost=SmarthostSettings(port=smarthost_port, timeout=5))
    now = [1_700_000_000.0]  # the delivery queue's clock: advanced by the tests, never slept
    delivery = delivery_for(relay_settings, tmp_path / "relay", clock=lambda: now[0])
    relay = await start_smtp_relay(
        relay_settings, Redactor(NotificationsPolicy.model_validate(NOTIFICATIONS)), audit=audit, delivery=delivery,
    )
    relay_port = relay.sockets[0].getsockname()[1]

    cert, key = self_signed_cert(tmp_path / "provider", ["localhost", "127.0.0.1"])
    provider = FakeSmsProvider()
    provider_runner = await provider.start(cert, key)
    egress_port = free_port()
    supervisor = EgressSupervisor(
        EgressSettings(
            enabled=True, mode="reverse", confdir=str(tmp_path / "ca"), upstream_ca_file=str(cert),
            reverse_targets=[{"listen_port": egress_port, "upstream": f"https://localhost:{provider.port}"}],
        ),  # fmt: skip
        policy_file,
    )
    await supervisor.start()

    pms = TestClient(
        TestServer(
            create_app(
                DemoSettings(
                    smtp_host="127.0.0.1", smtp_port=relay_port,
                    sms_api_url=f"http://127.0.0.1:{egress_port}",
                    sms_account_sid=SID, sms_auth_token=TOKEN, send_timeout=10.0,
                )  # fmt: skip
            )
        )
    )
    try:
        await supervisor.wait_ready(timeout=30)
        await pms.start_server()
        yield {"pms": pms, "provider": provider, "smarthost_port": smarthost_port, "audit": audit,
               "delivery": delivery, "now": now}
    finally:
        await pms.close()
        await supervisor.stop()
        await provider_runner.cleanup()
        relay.close()
        await relay.wait_closed()


async def confirm(pms: TestClient, reservation: int = 1001) -> dict[str, str]:
    """Log in as a desk clerk and press "send confirmation"."""
    if not any(c.key == "pms_csrf" for c in pms.session.cookie_jar):
        page = await pms.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
        password = {name: pw for name, pw, _ in DEMO_USERS}["alice"]
        login = await pms.post(
            "/login", data={"username": "alice", "password": password, "csrf_token": token}, allow_redirects=False
        )
        assert login.status == 302
    csrf = next(c.value for c in pms.session.cookie_jar if c.key == "pms_csrf")
    response = await pms.post(f"/api/reservations/{reservation}/confirm", headers={"X-CSRF-Token": csrf})
    assert response.status == 200
    return await response.json()


def assert_redacted(text: str, passport: bool = True) -> None:
    assert CARD not in text and "4111 1111 1111 1111" not in text
    if passport:
        assert PASSPORT not in text


async def test_booking_confirmation_arrives_redacted_by_mail_and_sms(world):
    sink = Sink()
    controller = start_sink(world["smarthost_port"], sink)
    try:
        assert await confirm(world["pms"]) == {"email": "sent", "sms": "sent"}
    finally:
        controller.stop()

    (mail,) = sink.messages
    plain = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Oliver Bennett" in plain and "1111" in plain
    assert_redacted(plain)
    assert_redacted(html, passport=False)  # see test_html_part_passport_redacted

    (sms,) = world["provider"].requests
    assert sms["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sms["form"]["To"] == PHONE
    assert "is confirmed" in sms["form"]["Body"]
    assert_redacted(sms["form"]["Body"])
    assert [r.action for r in world["audit"].records] == ["forwarded"]


async def test_smarthost_down_pms_sees_sent_and_the_queue_delivers_later(world):
    """The PMS is told "sent" although the smarthost is down: the relay queued the mail, and
    delivers it once the smarthost is back, without the PMS retrying."""
    first = await confirm(world["pms"])
    assert first == {"email": "sent", "sms": "sent"}

    sink = Sink()
    controller = start_sink(world["smarthost_port"], sink)
    try:
        world["now"][0] += 61
        await world["delivery"].run_due()
    finally:
        controller.stop()
    (mail,) = sink.messages
    assert_redacted(mail.get_body(("plain",)).get_content())
    assert [r.action for r in world["audit"].records] == ["deferred", "forwarded"]


async def test_html_part_passport_redacted(world):
    sink = Sink()
    controller = start_sink(world["smarthost_port"], sink)
    try:
        assert (await confirm(world["pms"]))["email"] == "sent"
    finally:
        controller.stop()
    (mail,) = sink.messages
    assert_redacted(mail.get_body(("html",)).get_content())
