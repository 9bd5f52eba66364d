"""policies/strict.yaml layered on the default: what clinics and spas are promised."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage

from gateway.policy import load_policy
from gateway.redact.engine import Redactor
from tests.login_env import Browser, login_env

STRICT = load_policy("policies/default.yaml", "policies/strict.yaml")


def confirmation() -> bytes:
    message = EmailMessage()
    message["From"] = "Spa Belvedere <spa@hotel.example>"
    message["To"] = "Jana Nováková <jana.novakova@example.cz>"
    message["Subject"] = "Your massage on 12 May"
    message.set_content(
        "Dear Jana Nováková,\n\nyour massage and physiotherapy session is booked for 12 May at 10:00.\n"
        "Paid with card 4111 1111 1111 1111. We look forward to seeing Mrs Nováková.\n"
    )
    return message.as_bytes()


def test_strict_mode_promises_in_the_policy():
    assert STRICT.sessions.idle_timeout == 20 * 60
    assert "every_login" in STRICT.alerts.on
    assert STRICT.notifications.strict is not None and STRICT.notifications.strict.leftover == "block"


def test_strict_mode_strips_names_services_and_cards_from_mail():
    outcome = Redactor(STRICT.notifications).redact_email(confirmation())
    assert not outcome.blocked, outcome.reason
    text = message_from_bytes(outcome.data, policy=email_policy.default)
    body = text.get_body(("plain",)).get_content()
    everything = str(text["Subject"]) + str(text["To"]) + body
    for leaked in ("Nováková", "Jana", "massage", "physiotherapy", "4111", "1111 1111"):
        assert leaked not in everything, leaked
    assert {"name", "service", "card"} <= set(outcome.counts())


async def test_strict_mode_signs_out_after_twenty_idle_minutes(tmp_path):
    async with login_env(tmp_path, policy=STRICT) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            env.clock.advance(19 * 60)
            status, _, _ = await browser.request("GET", "/reservations")
            assert status == 200
            env.clock.advance(21 * 60)
            status, headers, _ = await browser.request("GET", "/reservations")
            assert status == 303 and headers["Location"].startswith("/login")
        finally:
            await browser.close()
