"""Provider presets (issue 11 items 1 and 2): every preset redacts a realistic request body
(written from the provider's API reference) and keeps its recipients; `pms-gateway redact
--channel` gives what the egress proxy forwards for the same request."""

from __future__ import annotations

import base64
import io
import json
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.policy import ConfigError, load_policy
from gateway.redact.command import EXIT_BAD_INPUT, EXIT_OK, redact_command
from gateway.redact.egress import export_ca
from gateway.redact.engine import Redactor
from gateway.redact.policy import ChannelRule, NotificationsPolicy
from gateway.redact.presets import PRESETS
from tests.test_egress import egress, regular_settings, self_signed_cert, start_https  # noqa: F401 (fixture)

STRICT = NotificationsPolicy(
    detectors=["card", "iban", "email", "phone", "passport", "date_of_birth"],
    strict={"names": "redact", "services": {"massage": ["Massage", "masáž"]}, "leftover": "block"},
)
CARD = "4111 1111 1111 1111"


def _raw_mail() -> str:
    mail = EmailMessage()
    mail["From"] = "Seehof <info@seehof.example>"
    mail["To"] = "Anna Fischer <anna.fischer@web.de>"
    mail["Subject"] = "Ihre Buchung SH-1122"
    mail.set_content("Liebe Frau Fischer,\nIhre Massage ist bestätigt. Handy 0170 9876543.\n")
    return base64.b64encode(mail.as_bytes()).decode()


# preset -> (content type, body, recipient values kept, values that must go)
BODIES: dict[str, tuple[str, bytes, list[str], list[str]]] = {
    "twilio": (
        "application/x-www-form-urlencoded",
        b"To=%2B447700900456&From=%2B441614960000&MessagingServiceSid=MG9752274e9e519418a7406176694466fa"
        b"&Body=Dear+Mr+Dubois%2C+your+massage+is+at+10.+Call+07700+900789.",
        ["To=%2B447700900456", "From=%2B441614960000", "MG9752274e9e519418a7406176694466fa"],
        ["Dubois", "massage", "900789"],
    ),
    "vonage": (
        "application/json",
        json.dumps({"api_key": "a1b2c3d4", "api_secret": "Zx9sd8f7", "to": "447700900123",
                    "from": "Grange", "text": "Dear Ms Ahmed, card 4111 1111 1111 1111 declined."}).encode(),
        ['"to": "447700900123"', '"api_secret": "Zx9sd8f7"'],
        ["Ahmed", "4111 1111 1111 1111"],
    ),
    "messagebird": (
        "application/json",
        json.dumps({"recipients": [31612345678, "31687654321"], "originator": "Grachten",
                    "body": "Beste Sanne, bel 06 12345678 bij vragen."}).encode(),
        ["31612345678", "31687654321", "Grachten"],
        ["Sanne", "06 12345678"],
    ),
    "sendgrid": (
        "application/json",
        json.dumps({
            "personalizations": [
                {"to": [{"email": "emma.wilson@gmail.com", "name": "Emma Wilson"}],
                 "cc": [{"email": "tom.wilson@gmail.com", "name": "Tom Wilson"}],
                 "dynamic_template_data": {"first_name": "Emma", "phone": "+44 7700 900222",
                                           "booking_ref": "BK-30022"}},
                {"to": [{"email": "amy.carter@yahoo.co.uk", "name": "Amy Carter"}],
                 "dynamic_template_data": {"first_name": "Amy"}},
            ],
            "from": {"email": "reservations@grange.example", "name": "The Grange"},
            "template_id": "d-8f2c1a3b4e5d6f7a8b9c0d1e2f3a4b5c",
            "content": [{"type": "text/html",
                         "value": "<p>Dear <b>Emma</b>&nbsp;<i>Wilson</i>, mobile 07700&nbsp;900222</p>"}],
        }).encode(),
        ["emma.wilson@gmail.com", "tom.wilson@gmail.com", "amy.carter@yahoo.co.uk",
         "reservations@grange.example", "BK-30022", "d-8f2c1a3b4e5d6f7a8b9c0d1e2f3a4b5c", "<p>", "</b>"],
        ["Emma", "Wilson", "Amy", "Carter", "900222"],
    ),
    "mailgun": (
        "application/x-www-form-urlencoded",
        b"from=Harbour+Inn+%3Cdesk%40harbour.example%3E&to=Rachel+Green+%3Crachel.green%40gmail.com%3E"
        b"&subject=Your+stay&html=%3Cp%3EGood+morning+Ms+%3Cb%3EGreen%3C%2Fb%3E%2C+call+07700+900111%3C%2Fp%3E",
        ["%3Crachel.green%40gmail.com%3E", "desk%40harbour.example"],
        ["Green", "900111"],
    ),
    "postmark": (
        "application/json",
        json.dumps([
            {"From": "desk@harbour.example", "To": "Grace Kelly <grace.kelly@gmail.com>", "Subject": "Stay",
             "TextBody": "Hello Mrs Kelly, card on file 4111 1111 1111 1111.",
             "HtmlBody": "<p>Hello Mrs <strong>Kelly</strong></p>", "MessageStream": "outbound"},
            {"From": "desk@harbour.example", "To": "jacob.scott@gmail.com", "Subject": "Stay",
             "TemplateModel": {"name": "Jacob Scott", "phone": "+44 7700 900377"}},
        ]).encode(),
        ["grace.kelly@gmail.com", "jacob.scott@gmail.com", "outbound"],
        ["Kelly", "Jacob", "900377", "4111 1111 1111 1111"],
    ),
    "mailjet": (
        "application/json",
        json.dumps({"Messages": [{
            "From": {"Email": "spa@lumiere.example", "Name": "Spa Lumière"},
            "To": [{"Email": "camille.bernard@gmail.com", "Name": "Camille Bernard"}],
            "Subject": "Votre soin", "TemplateID": 4412021,
            "TextPart": "Chère Camille, votre massage le 3 mai. Portable 06 12 34 56 78.",
            "HTMLPart": "<p>Chère <b>Camille</b>, votre <em>massage</em></p>",
            "Variables": {"prenom": "Camille"}}]}).encode(),
        ["camille.bernard@gmail.com", "spa@lumiere.example", "4412021", "3 mai"],
        ["Camille", "Bernard", "massage", "56 78"],
    ),
    "brevo": (
        "application/json",
        json.dumps({"sender": {"name": "Hotel Lípa", "email": "recepce@lipa.example"},
                    "messageVersions": [
                        {"to": [{"email": "tereza.mala@seznam.cz", "name": "Tereza Malá"}],
                         "params": {"JMENO": "Terezo"}},
                        {"to": [{"email": "jan.maly@seznam.cz", "name": "Jan Malý"}]}],
                    "subject": "Potvrzení", "templateId": 12,
                    "htmlContent": "<p>Milá <strong>Terezo</strong>, telefon 731&nbsp;234&nbsp;567</p>",
                    "params": {"REZERVACE": "LP-2211"}}).encode(),
        ["tereza.mala@seznam.cz", "jan.maly@seznam.cz", "recepce@lipa.example", "LP-2211"],
        ["Terez", "Mal", "234"],
    ),
    "brevo_sms": (
        "application/json",
        json.dumps({"sender": "HotelLipa", "recipient": "420731234567",
                    "content": "Dobrý den, paní Veselá, Vaše masáž je v 15:00. Volejte 602 123 456."}).encode(),
        ["420731234567", "HotelLipa"],
        ["Vesel", "masáž", "602 123 456"],
    ),
    "ses": (
        "application/json",
        json.dumps({"FromEmailAddress": "info@seehof.example",
                    "Destination": {"ToAddresses": ["anna.fischer@web.de"], "CcAddresses": ["max@web.de"]},
                    "Content": {"Raw": {"Data": _raw_mail()}}}).encode(),
        ["anna.fischer@web.de", "max@web.de", "info@seehof.example"],
        [],  # checked inside the decoded MIME message below
    ),
}


def test_every_preset_has_a_test_body() -> None:
    assert set(BODIES) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(BODIES))
def test_preset_redacts_the_body_and_keeps_recipients(preset: str) -> None:
    content_type, body, kept, gone = BODIES[preset]
    channel = ChannelRule(preset=preset)  # type: ignore[call-arg]
    outcome = Redactor(STRICT).redact_http_body(body, content_type, channel)
    assert not outcome.blocked, outcome.reason
    out = outcome.data.decode()
    for value in kept:
        assert value in out, (preset, value, out)
    for value in gone:
        assert value not in out, (preset, value, out)
    assert outcome.findings


def test_ses_raw_mime_is_redacted_as_mail() -> None:
    content_type, body, _, _ = BODIES["ses"]
    outcome = Redactor(STRICT).redact_http_body(body, content_type, ChannelRule(preset="ses"))  # type: ignore[call-arg]
    raw = base64.b64decode(json.loads(outcome.data)["Content"]["Raw"]["Data"]).decode()
    assert "Fischer" not in raw.split("\n\n", 1)[1] and "Massage" not in raw and "9876543" not in raw
    assert "anna.fischer@web.de" in raw
    garbled = body.replace(b'"Data": "', b'"Data": "%%')
    assert Redactor(STRICT).redact_http_body(garbled, content_type, ChannelRule(preset="ses")).blocked  # type: ignore[call-arg]


def test_names_kept_outside_strict_mode_but_known() -> None:
    """Without strict mode the name field stays; other detectors still run."""
    content_type, body, _, _ = BODIES["sendgrid"]
    outcome = Redactor(NotificationsPolicy()).redact_http_body(body, content_type, ChannelRule(preset="sendgrid"))  # type: ignore[call-arg]
    data = json.loads(outcome.data)
    assert data["personalizations"][0]["to"][0] == {"email": "emma.wilson@gmail.com", "name": "Emma Wilson"}


def test_preset_in_a_policy_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("notifications:\n  channels:\n    - {preset: sendgrid, egress_host: mail.internal.example}\n"
                    "    - {preset: brevo, name: newsletter, egress_host: api.sendinblue.com}\n")
    channels = load_policy(path).notifications.channels
    assert channels[0].name == "sendgrid" and channels[0].matches("mail.internal.example", "/v3/mail/send")
    assert not channels[0].matches("api.sendgrid.com", "/v3/mail/send")
    assert channels[1].name == "newsletter" and channels[1].matches("api.sendinblue.com", "/v3/smtp/email")
    path.write_text("notifications:\n  channels:\n    - {preset: sendgird}\n")
    with pytest.raises(ConfigError) as error:
        load_policy(path)
    assert "sendgird" in str(error.value) and "sendgrid" in str(error.value) and "p.yaml" in str(error.value)


def run(args: dict, data: bytes) -> tuple[int, bytes, str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    status = redact_command(args.get("format", "text"), args.get("policy"), args.get("explain", False),
                            io.BytesIO(data), stdout, stderr, args.get("channel"))
    return status, stdout.getvalue(), stderr.getvalue()


def test_redact_command_channel_and_explain(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"notifications": STRICT.model_dump(exclude_defaults=True)}))
    content_type, body, kept, gone = BODIES["twilio"]
    status, out, err = run({"channel": "twilio", "policy": policy, "explain": True}, body)
    assert status == EXIT_OK
    assert all(v in out.decode() for v in kept) and not any(v in out.decode() for v in gone)
    assert "name\tfield:Body" in err and "Dubois" not in err
    status, _, err = run({"channel": "nope", "policy": policy}, body)
    assert status == EXIT_BAD_INPUT and "nope" in err and "sendgrid" in err


def test_redact_command_defaults_to_the_default_policy_file() -> None:
    """Without --policy: policies/default.yaml's rules (it keeps phones and e-mails)."""
    status, out, _ = run({}, b"Call +44 20 7946 0958, card 4111111111111111")
    assert (status, out) == (EXIT_OK, b"Call +44 20 7946 0958, card ************1111")


# -- the command and the egress proxy agree -------------------------------------------


class RawProvider:
    """A provider API over HTTPS that records the exact bytes it receives."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({"id": "1"}, status=202)

    async def start(self, cert: Path, key: Path) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner, self.port = await start_https(app, cert, key)
        return runner


@pytest.fixture
async def raw_provider(tmp_path) -> AsyncIterator[tuple[RawProvider, Path]]:
    cert, key = self_signed_cert(tmp_path / "provider", ["localhost", "127.0.0.1"])
    fake = RawProvider()
    runner = await fake.start(cert, key)
    yield fake, cert
    await runner.cleanup()


async def test_redact_channel_equals_what_the_egress_proxy_forwards(tmp_path, raw_provider, egress):  # noqa: F811
    fake, cert = raw_provider
    notifications = STRICT.model_dump(exclude_defaults=True)
    notifications["strict"]["leftover"] = "keep"
    notifications["channels"] = [{"preset": "sendgrid", "egress_host": "localhost"},
                                 {"preset": "twilio", "egress_host": "localhost"}]
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"notifications": notifications}))
    settings = regular_settings(tmp_path, cert)
    await egress(settings, policy)
    trust = ssl.create_default_context(cafile=str(export_ca(settings.confdir)))
    cases = [("sendgrid", "/v3/mail/send"), ("twilio", "/2010-04-01/Accounts/AC1/Messages.json")]
    async with aiohttp.ClientSession() as http:
        for preset, path in cases:
            content_type, body, _, _ = BODIES[preset]
            async with http.post(f"https://localhost:{fake.port}{path}", data=body,
                                 headers={"Content-Type": content_type},
                                 proxy=f"http://127.0.0.1:{settings.port}", ssl=trust) as response:
                assert response.status == 202
    for (preset, _), forwarded in zip(cases, fake.bodies, strict=True):
        status, out, _ = run({"channel": preset, "policy": policy}, BODIES[preset][1])
        assert status == EXIT_OK
        assert out == forwarded, preset
    assert "Wilson" not in fake.bodies[0].decode() and "Dubois" not in fake.bodies[1].decode()
    assert parse_qs(fake.bodies[1].decode())["To"] == ["+447700900456"]
