"""The SMTP relay over real sockets: PMS-side client (aiosmtplib) -> relay -> aiosmtpd sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import tempfile
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from gateway.auth.keys import KeyRing
from gateway.redact.delivery import DeliveryWorker
from gateway.redact.engine import Redactor
from gateway.redact.mail_queue import MailQueue, queue_dir
from gateway.redact.outbound_audit import OutboundRecord
from gateway.redact.policy import ChannelRule, NotificationsPolicy
from gateway.redact.settings import SmarthostSettings, SmtpRelaySettings
from gateway.redact.smtp_relay import hash_password, start_smtp_relay
from tests.test_egress import self_signed_cert
from tests.harness import free_port

CARD = "4111 1111 1111 1111"




class Sink:
    """The smarthost: an aiosmtpd handler that keeps what it receives."""

    def __init__(self, data_reply: str = "250 OK", rcpt_reply: str | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.data_reply, self.rcpt_reply = data_reply, rcpt_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply.startswith("250"):
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return self.data_reply


class Audit:
    def __init__(self) -> None:
        self.records: list[OutboundRecord] = []

    async def __call__(self, record: OutboundRecord) -> None:
        self.records.append(record)


def start_sink(port: int, handler: Sink) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def sink():
    handler = Sink()
    controller = start_sink(free_port(), handler)
    yield handler, controller.port
    controller.stop()


def redactor(**actions) -> Redactor:
    return Redactor(
        NotificationsPolicy(
            channels=[ChannelRule(name="mail", smtp=True)],
            detectors=["card"],
            actions=actions or {"card": {"mask": "last4"}},
        )
    )


def relay_settings(smarthost_port: int, **overrides) -> SmtpRelaySettings:
    return SmtpRelaySettings(
        enabled=True, port=0, smarthost=SmarthostSettings(port=smarthost_port, timeout=5), **overrides
    )


def delivery_for(settings: SmtpRelaySettings, data_dir: Path | None = None, **kw) -> DeliveryWorker:
    """The relay's delivery queue and worker over `data_dir` (a fresh temporary one by default)."""
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="relay-"))
    keyring = KeyRing.load(data_dir / "secret.key", None)
    return DeliveryWorker(MailQueue(queue_dir(data_dir), keyring), settings, **kw)


async def relay(settings: SmtpRelaySettings, red: Redactor | None = None, **kw) -> tuple[asyncio.Server, int]:
    kw.setdefault("delivery", delivery_for(settings))
    server = await start_smtp_relay(settings, red or redactor(), **kw)
    return server, server.sockets[0].getsockname()[1]


def booking_mail(body: str = f"Dear guest, your card {CARD} was charged.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "reservations@hotel.example"
    msg["To"] = "guest@mail.example"
    msg["Subject"] = "Your booking"
    msg["Message-ID"] = "<booking-1@hotel.example>"
    msg.set_content(body)
    return msg


def text_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()


async def send(port: int, message: EmailMessage | bytes, **kw):
    if isinstance(message, bytes):
        kw.setdefault("sender", "reservations@hotel.example")
        kw.setdefault("recipients", ["guest@mail.example"])
    kw.setdefault("start_tls", False)
    return await aiosmtplib.send(message, hostname="127.0.0.1", port=port, timeout=10, **kw)


async def test_message_arrives_redacted(sink):
    handler, port = sink
    audit = Audit()
    server, relay_port = await relay(relay_settings(port), audit=audit)
    try:
        await send(relay_port, booking_mail())
    finally:
        server.close()
    assert len(handler.messages) == 1
    text = text_of(handler.messages[0])
    assert CARD not in text and CARD.replace(" ", "") not in text
    assert "1111" in text and "Dear guest" in text
    assert handler.messages[0]["To"] == "guest@mail.example"
    (record,) = audit.records
    assert record.action == "forwarded" and record.channel == "mail"
    assert record.detectors == {"card": 1}
    assert record.message_id == "<booking-1@hotel.example>"
    assert CARD not in repr(record)


async def test_quoted_printable_soft_break_inside_card_is_caught(sink):
    handler, port = sink
    raw = (
        "From: reservations@hotel.example\r\n"
        "To: guest@mail.example\r\n"
        "Subject: Booking\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Your card 4111 1111 11=\r\n"
        "11 1111 was charged =E2=82=AC 120.\r\n"
    ).encode()
    server, relay_port = await relay(relay_settings(port))
    try:
        await send(relay_port, raw)
    finally:
        server.close()
    (msg,) = handler.messages
    text = text_of(msg)
    assert "was charged" in text
    assert CARD not in text and "4111 1111 11" not in text


async def test_smarthost_down_is_queued_and_delivered_when_back():
    """Store and forward: 250 once queued; the worker delivers when the smarthost is back
    (the clock is the worker's: advanced, not slept). tests/test_mail_queue.py has more."""
    port = free_port()  # nothing listens here yet
    audit = Audit()
    now = [1_700_000_000.0]
    settings = relay_settings(port)
    worker = delivery_for(settings, clock=lambda: now[0])
    server, relay_port = await relay(settings, audit=audit, delivery=worker)
    try:
        _, reply = await send(relay_port, booking_mail())
        assert reply.startswith("2.0.0 Queued as")
        assert [r.action for r in audit.records] == ["deferred"]

        handler = Sink()
        controller = start_sink(port, handler)
        try:
            now[0] += 61
            await worker.run_due()
        finally:
            controller.stop()
    finally:
        server.close()
    (msg,) = handler.messages
    assert CARD not in text_of(msg)
    assert [r.action for r in audit.records] == ["deferred", "forwarded"]
    assert worker.queue.ids() == []


async def test_smarthost_temporary_refusal_is_queued():
    handler = Sink(data_reply="452 4.3.1 Insufficient system storage")
    controller = start_sink(free_port(), handler)
    settings = relay_settings(controller.port)
    worker = delivery_for(settings)
    server, relay_port = await relay(settings, delivery=worker)
    try:
        _, reply = await send(relay_port, booking_mail())
    finally:
        server.close()
        controller.stop()
    assert reply.startswith("2.0.0 Queued as")
    (queued,) = [worker.queue.get(i) for i in worker.queue.ids()]
    assert [(r.state, r.code) for r in queued.recipients] == [("pending", 452)]


async def test_smarthost_permanent_refusal_passes_through():
    controller = start_sink(free_port(), Sink(rcpt_reply="550 5.1.1 No such user"))
    audit = Audit()
    server, relay_port = await relay(relay_settings(controller.port), audit=audit)
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(relay_port, booking_mail())
    finally:
        server.close()
        controller.stop()
    assert refused.value.code == 550 and "No such user" in refused.value.message
    assert audit.records[-1].action == "refused"
    assert "guest@mail.example" not in repr(audit.records[-1])


async def test_policy_block_is_554_nothing_sent_audited(sink):
    handler, port = sink
    audit = Audit()
    alerts: list[OutboundRecord] = []

    async def on_blocked(record: OutboundRecord) -> None:
        alerts.append(record)

    server, relay_port = await relay(relay_settings(port), redactor(card="block"), audit=audit, on_blocked=on_blocked)
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(relay_port, booking_mail())
    finally:
        server.close()
    assert refused.value.code == 554
    assert handler.messages == []
    (record,) = audit.records
    assert record.action == "blocked" and record.detectors == {"card": 1}
    assert CARD not in repr(record)
    assert alerts == [record]


async def test_client_outside_allowed_clients_is_refused(sink):
    handler, port = sink
    server, relay_port = await relay(relay_settings(port, allowed_clients=["10.0.0.0/8"]))
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(relay_port, booking_mail())
    finally:
        server.close()
    assert refused.value.code == 554
    assert handler.messages == []


async def test_starttls_and_auth(sink, tmp_path):
    handler, port = sink
    cert, key = self_signed_cert(tmp_path, ["localhost", "127.0.0.1"])
    settings = relay_settings(
        port, starttls_cert=str(cert), starttls_key=str(key), auth_users={"pms": hash_password("s3cret", 1000)}
    )
    trust = ssl.create_default_context(cafile=str(cert))
    server, relay_port = await relay(settings)
    try:
        # No STARTTLS: refused before any mail is taken.
        with pytest.raises(aiosmtplib.SMTPResponseException) as clear:
            await send(relay_port, booking_mail())
        assert clear.value.code == 530
        # TLS but wrong password.
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(relay_port, booking_mail(), start_tls=True, tls_context=trust, username="pms", password="nope")
        # TLS without AUTH.
        with pytest.raises(aiosmtplib.SMTPResponseException) as anonymous:
            await send(relay_port, booking_mail(), start_tls=True, tls_context=trust)
        assert anonymous.value.code == 530
        await send(relay_port, booking_mail(), start_tls=True, tls_context=trust, username="pms", password="s3cret")
    finally:
        server.close()
    (msg,) = handler.messages
    assert CARD not in text_of(msg)


def test_auth_without_tls_is_a_configuration_error():
    with pytest.raises(ValueError, match="starttls"):
        SmtpRelaySettings(auth_users={"pms": "env:PMS_SMTP_PASSWORD"})
