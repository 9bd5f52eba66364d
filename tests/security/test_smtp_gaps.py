"""Issue 8, item 11: the SMTP relay's gaps, each sent over real SMTP.

PMS-side client (aiosmtplib) -> relay (with its hold queue) -> aiosmtpd smarthost. Each
hostile message either arrives without the card's digits (looked for with every
separator stripped, in every decoded header, preamble, epilogue and part) or is held:
the PMS gets 250, nothing reaches the smarthost, the held file is sealed (no card, no
guest name in clear, mode 0600) and the operator is alerted. The MIME path is fuzzed with
hypothesis: generated structures carrying a card never leave unscanned.
"""

from __future__ import annotations

import asyncio
import base64
import email
import os
import re
import stat
from email.header import decode_header
from email.policy import compat32
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.audit.keys import key_path, load_or_create_keys
from gateway.auth.keys import KeyRing
from gateway.cli import app
from gateway.notify.alerter import Alerter
from gateway.policy.schema import Policy
from gateway.redact.detectors.card import is_card_number
from gateway.redact.engine import Redactor
from gateway.redact.hold_queue import HoldQueue, hold_dir
from gateway.redact.outbound_audit import OutboundRecord
from gateway.redact.policy import ChannelRule, NotificationsPolicy
from gateway.redact.smtp_relay import start_smtp_relay
from tests.harness import free_port
from tests.test_smtp_relay import Audit, delivery_for, relay_settings, start_sink

CARD = "4111111111111111"
VISA13 = "4222222222222"
GUEST = "Jana Nováková"
HEAD = (
    "From: reservations@hotel.example\r\n"
    "To: =?utf-8?q?Jana_Nov=C3=A1kov=C3=A1?= <jana@mail.example>\r\n"
    "Message-ID: <gap-1@hotel.example>\r\n"
    "MIME-Version: 1.0\r\n"
)


def policy() -> NotificationsPolicy:
    return NotificationsPolicy(
        channels=[ChannelRule(name="mail", smtp=True)],
        detectors=["card", "iban", "email", "phone", "name"],
        actions={"card": {"mask": "last4"}},
    )


class RawSink:
    """The smarthost: keeps the raw bytes it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


def digits_seen(raw: bytes) -> list[str]:
    """The digits of every text a recipient's software could show, separators stripped,
    per text (headers decoded, preamble, epilogue, every part decoded) and raw."""
    message = email.message_from_bytes(raw, policy=compat32)
    texts = [raw.decode("latin-1")]
    for part in message.walk():
        for _, value in part.items():
            for piece, charset in decode_header(re.sub(r"\r?\n(?=[ \t])", "", str(value))):
                texts.append(piece if isinstance(piece, str) else _decoded(piece, charset))
        texts += [part.preamble or "", part.epilogue or ""]
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts += [_decoded(payload, part.get_content_charset()), payload.decode("utf-8", "replace")]
    return [re.sub(r"\D", "", text) for text in texts]


def _decoded(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return data.decode("latin-1")


def carries(raw: bytes, number: str) -> bool:
    return any(number in digits for digits in digits_seen(raw))


class Relay:
    """A relay with a hold queue in `data_dir`, a real Alerter and an audit recorder."""

    def __init__(self, data_dir: Path, smarthost_port: int) -> None:
        self.data_dir = data_dir
        self.keyring = KeyRing.load(data_dir / "secret.key", None)
        self.queue = HoldQueue(hold_dir(data_dir), self.keyring)
        self.audit = Audit()
        self.alerter = Alerter(lambda: Policy())
        self.alerts: list[bool] = []
        self.smarthost_port = smarthost_port
        self.server: asyncio.Server | None = None

    async def on_held(self, record: OutboundRecord) -> None:
        self.alerts.append(await self.alerter.mail_held(record))

    async def __aenter__(self) -> Relay:
        settings = relay_settings(self.smarthost_port)
        self.server = await start_smtp_relay(
            settings, Redactor(policy()), self.audit, hold=self.queue, on_held=self.on_held,
            delivery=delivery_for(settings, self.data_dir),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.alerter.close(timeout=0)

    async def send(self, raw: bytes) -> tuple[int, str]:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        _, reply = await aiosmtplib.send(
            raw, sender="reservations@hotel.example", recipients=["jana@mail.example"],
            hostname="127.0.0.1", port=port, timeout=10, start_tls=False,
        )
        return 250, reply


@pytest.fixture
def sink():
    handler = RawSink()
    controller = start_sink(free_port(), handler)
    yield handler, controller.port
    controller.stop()


def text_mail(body: str, extra_headers: str = "", subject: str = "Your booking") -> bytes:
    return (
        HEAD + extra_headers + f"Subject: {subject}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    ).encode()


def multipart(parts: str, preamble: str = "", epilogue: str = "", boundary: str = "b1", head: str = "") -> bytes:
    return (
        HEAD + head + f"Subject: Your booking\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
        + preamble + parts + epilogue
    ).encode()


PLAIN_PART = "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDear guest, see you soon.\r\n"

DELIVERED = {
    "x-header": text_mail("Dear guest.\r\n", extra_headers="X-Guest-Card: 4111 1111 1111 1111\r\n"),
    "x-header-folded": text_mail("Dear guest.\r\n", extra_headers="X-Payment: card 4111 1111\r\n 1111 1111\r\n"),
    "preamble-epilogue": multipart(
        PLAIN_PART + "--b1--\r\n", preamble="Card 4111 1111 1111 1111\r\n", epilogue="card 4111-1111-1111-1111\r\n"
    ),
    "cc-display-name": text_mail("Dear guest.\r\n", extra_headers='Cc: "4111 1111 1111 1111" <front@hotel.example>\r\n'),
    "cc-unquoted-name": text_mail("Dear guest.\r\n", extra_headers="Cc: 4111 1111 1111 1111 <front@hotel.example>\r\n"),
    "json-part": multipart(
        PLAIN_PART + '--b1\r\nContent-Type: application/json\r\n\r\n{"card": "4111111111111111"}\r\n--b1--\r\n'
    ),
    "xml-part-base64": multipart(
        PLAIN_PART + "--b1\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"<card>4111 1111 1111 1111</card>").decode().replace("\n", "\r\n") + "--b1--\r\n"
    ),
    "dots": text_mail("Card 4111.1111.1111.1111 charged.\r\n"),
    "spaced-dashes": text_mail("Card 4111 - 1111 - 1111 - 1111 charged.\r\n"),
    "zero-width": text_mail("Card 4111\u200b1111\u200b1111\u200b1111, 4111\u206011111111\u00ad1111.\r\n"),
    "line-break": text_mail("Card 4111 1111\r\n1111 1111 charged.\r\n"),
    "line-break-unspaced": text_mail("Card 411111111111\r\n1111 charged.\r\n"),
    "qp-soft-break": (
        HEAD + "Subject: Booking\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nCard 41111111=\r\n11111111 charged.\r\n"
    ).encode(),
    "subject-encoded": text_mail("Hi\r\n", subject="=?utf-8?b?" + base64.b64encode(b"Card 4111 1111 1111 1111").decode() + "?="),
    "visa-13": text_mail("Card 4222222222222 and 4222 2222 2222 2.\r\n"),
    "message-id": text_mail("Hi\r\n", extra_headers="X-Ref: <4111111111111111@hotel.example>\r\n"),
    "attached-text": multipart(
        PLAIN_PART + "--b1\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"list.csv\"\r\n\r\n"
        "room;card\r\n12;4111111111111111\r\n--b1--\r\n"
    ),
}

HELD = {
    "duplicate-content-type": (
        HEAD + "Subject: Booking\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Type: application/octet-stream\r\n\r\nCard 4111 1111 1111 1111 for Jana Nováková\r\n"
    ).encode(),
    "subject-unknown-charset": text_mail(
        "Hi Jana Nováková\r\n", subject="=?x-unknown?q?Card_4111_1111_1111_1111?="
    ),
    "broken-boundary": multipart(
        "--b2\r\nContent-Type: text/plain\r\n\r\nCard 4111 1111 1111 1111 Jana Nováková\r\n--b2--\r\n"
    ),
    "unclosed-boundary": multipart(
        PLAIN_PART + "--b1\r\nContent-Type: text/plain\r\n\r\nCard 4111 1111 1111 1111 Jana Nováková\r\n"
    ),
    "multipart-without-boundary": (
        HEAD + "Subject: Booking\r\nContent-Type: multipart/mixed\r\n\r\n"
        "--x\r\nContent-Type: text/plain\r\n\r\nCard 4111 1111 1111 1111 Jana Nováková\r\n--x--\r\n"
    ).encode(),
    "unknown-part-charset": multipart(
        "--b1\r\nContent-Type: text/plain; charset=x-mystery\r\n\r\nCard 4111 1111 1111 1111 Jana Nováková\r\n--b1--\r\n"
    ),
    "unknown-transfer-encoding": multipart(
        "--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-gzip64\r\n\r\nJana Nováková 4111111111111111\r\n--b1--\r\n"
    ),
    "card-in-binary-part": multipart(
        PLAIN_PART + "--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"%PDF-1.4 Jana Nov\xc3\xa1kov\xc3\xa1 (4111 1111 1111 1111) Tj").decode().replace("\n", "\r\n")
        + "--b1--\r\n"
    ),
    # Labelled one-byte, written UTF-8: zero-width spaces between the groups read as
    # mojibake in latin-1 but vanish in a viewer that reads UTF-8 (found by hypothesis).
    "zero-width-card-in-mislabelled-binary": (
        HEAD + "Subject: Booking\r\nContent-Type: application/octet-stream; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode() + "Dear guest 4111\u200b1111\u200b1111\u200b1111 Jana Nováková\r\n".encode(),
}


@pytest.mark.parametrize("name", sorted(DELIVERED))
async def test_hostile_message_arrives_without_the_card(name, sink, tmp_path):
    handler, port = sink
    async with Relay(tmp_path, port) as relay:
        await relay.send(DELIVERED[name])
    (received,) = handler.received
    assert not carries(received, CARD) and not carries(received, VISA13)
    assert b"Dear guest" in received or b"Hi" in received or b"Card" in received
    assert relay.queue.ids() == [] and relay.audit.records[-1].action == "forwarded"


@pytest.mark.parametrize("name", sorted(HELD))
async def test_message_not_read_whole_is_held_sealed_and_alerted(name, sink, tmp_path):
    handler, port = sink
    async with Relay(tmp_path, port) as relay:
        code, reply = await relay.send(HELD[name])
    assert code == 250 and "Held" in reply
    assert handler.received == []  # nothing reached the smarthost
    (held_id,) = relay.queue.ids()
    path = hold_dir(tmp_path) / f"{held_id}.held"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    on_disk = path.read_bytes()
    for secret in (CARD.encode(), b"4111 1111", "Nováková".encode(), b"Nov=C3=A1kov", b"Jana"):
        assert secret not in on_disk
    assert base64.b64encode(b"4111") not in on_disk
    assert relay.queue.get(held_id).data == HELD[name]  # the key opens it: nothing is lost
    (record,) = relay.audit.records
    assert record.action == "held" and held_id in (record.reason or "") and CARD not in repr(record)
    assert relay.alerts == [True]  # mail_held is on by default


def cli(data_dir: Path, smarthost_port: int, *args: str) -> tuple[int, str]:
    env = {
        "PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_POLICY_PATHS": "[]",
        "PMS_GATEWAY_SMTP_RELAY__SMARTHOST__PORT": str(smarthost_port),
    }
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def test_hold_list_release_refused_drop_audited(sink, tmp_path):
    handler, port = sink
    load_or_create_keys(key_path(tmp_path))
    async with Relay(tmp_path, port) as relay:
        await relay.send(HELD["broken-boundary"])
    (held_id,) = relay.queue.ids()

    code, output = await asyncio.to_thread(cli, tmp_path, port, "mail", "hold")
    assert code == 0 and held_id in output and "malformed" in output and CARD not in output

    code, output = await asyncio.to_thread(cli, tmp_path, port, "mail", "release", held_id)
    assert code == 1 and "stays held" in output
    assert relay.queue.ids() == [held_id] and handler.received == []

    code, output = await asyncio.to_thread(cli, tmp_path, port, "mail", "drop", "../secret.key")
    assert code == 1 and (tmp_path / "secret.key").exists()

    code, output = await asyncio.to_thread(cli, tmp_path, port, "mail", "drop", held_id, "--operator", "it-admin")
    assert code == 0 and relay.queue.ids() == []
    code, output = await asyncio.to_thread(cli, tmp_path, port, "audit", "query", "--format", "jsonl")
    assert '"mail_drop"' in output and held_id in output and "it-admin" in output


async def test_release_delivers_once_the_message_reads_whole(sink, tmp_path):
    """A message held for a reason that no longer holds (here: put there by hand) is
    re-scanned on release and delivered redacted."""
    handler, port = sink
    load_or_create_keys(key_path(tmp_path))
    queue = HoldQueue(hold_dir(tmp_path), KeyRing.load(tmp_path / "secret.key", None))
    held_id = queue.put(text_mail("Card 4111 1111 1111 1111.\r\n"), "reservations@hotel.example",
                        ["jana@mail.example"], [], "test")
    code, output = await asyncio.to_thread(cli, tmp_path, port, "mail", "release", held_id, "--operator", "it")
    assert code == 0, output
    (received,) = handler.received
    assert not carries(received, CARD) and b"1111" in received
    assert queue.ids() == []
    code, output = await asyncio.to_thread(cli, tmp_path, port, "audit", "query", "--format", "jsonl")
    assert '"mail_release"' in output and held_id in output


# ---------------------------------------------------------------- hypothesis: the MIME path

CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "4222222222222", "6011111111111117"]
SEPARATORS = [" ", "-", ".", " - ", "\u200b", "\u2060", "\ufeff", "\u00ad", "\r\n", ""]
CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "us-ascii", "utf-16", "x-unknown", "koi8-r"]
CONTENT_TYPES = ["text/plain", "text/html", "application/json", "application/xml", "text/csv",
                 "application/problem+json", "message/delivery-status", "application/octet-stream"]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-weird"]
PLACES = ["body", "x-header", "subject", "cc-name", "preamble", "epilogue", "filename"]


@st.composite
def written_card(draw) -> tuple[str, str]:
    number = draw(st.sampled_from(CARDS))
    sep = draw(st.sampled_from(SEPARATORS))
    groups = [number[i:i + 4] for i in range(0, len(number), 4)]
    return number, sep.join(groups)


def encode_body(text: str, charset: str, encoding: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding header value, body) as a sender would write them."""
    try:
        data = text.encode(charset)
    except (LookupError, UnicodeEncodeError):
        data = text.encode("utf-8")
    if encoding == "base64":
        return encoding, base64.encodebytes(data).decode()
    if encoding == "quoted-printable":
        import quopri
        return encoding, quopri.encodestring(data).decode()
    return encoding, data.decode("ascii", "surrogateescape")  # the bytes themselves on the wire


@st.composite
def hostile_mail(draw) -> tuple[bytes, str]:
    number, written = draw(written_card())
    place = draw(st.sampled_from(PLACES))
    counter = iter(range(100))

    def leaf(carrier: bool) -> str:
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        charset = draw(st.sampled_from(CHARSETS))
        encoding, body = encode_body(f"Dear guest {written if carrier and place == 'body' else 'welcome'}\n",
                                     charset, draw(st.sampled_from(ENCODINGS)))
        headers = f"Content-Type: {ctype}; charset={charset}\n"
        if draw(st.booleans()):
            headers += f"Content-Type: {draw(st.sampled_from(CONTENT_TYPES))}\n"
        if carrier and place == "filename":
            headers += f'Content-Disposition: attachment; filename="card {written}.txt"\n'
        if carrier and place == "x-header":
            headers += f"X-Card: {written}\n"
        return headers + f"Content-Transfer-Encoding: {encoding}\n\n{body}"

    def tree(depth: int, carrier: bool) -> str:
        if depth == 0 or not draw(st.booleans()):
            return leaf(carrier)
        boundary = f"bd{next(counter)}"
        children = draw(st.integers(1, 3))
        which = draw(st.integers(0, children - 1))
        lines = [f"Content-Type: multipart/{draw(st.sampled_from(['mixed', 'alternative', 'related']))}; "
                 f'boundary="{boundary}"\n\n']
        if carrier and place == "preamble":
            lines.append(f"card {written}\n")
        for index in range(children):
            mark = boundary if not draw(st.integers(0, 9)) == 0 else boundary + "x"  # broken boundaries
            lines.append(f"--{mark}\n{tree(depth - 1, carrier and index == which)}\n")
        if draw(st.integers(0, 5)):
            lines.append(f"--{boundary}--\n")
        if carrier and place == "epilogue":
            lines.append(f"card {written}\n")
        return "".join(lines)

    head = "From: reservations@hotel.example\nTo: Jana <jana@mail.example>\nMIME-Version: 1.0\n"
    head += f"Subject: {'card ' + written if place == 'subject' else 'Booking'}\n"
    if place == "cc-name":
        head += f'Cc: "{written}" <front@hotel.example>\n'
    raw = head + tree(draw(st.integers(0, 3)), True)
    return raw.encode("utf-8", "surrogateescape"), number


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_mail())
def test_no_unscanned_part_leaves(case) -> None:
    """The relay's decision on a generated message: held, or sent without the card."""
    raw, number = case
    outcome = Redactor(policy()).redact_email(raw)
    assert is_card_number(number)
    if outcome.blocked:
        assert outcome.held and outcome.data == b""
        return
    assert not carries(outcome.data, number), (raw, outcome.data)
