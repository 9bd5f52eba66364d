"""E-mail (MIME, HTML, transfer encodings) and HTTP body formats through the engine."""

from __future__ import annotations

import email
import json
import re
from email import policy as email_policy
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from gateway.redact.engine import Redactor
from gateway.redact.policy import ChannelRule, NotificationsPolicy, StrictPolicy

CARD = "4111 1111 1111 1111"
STRICT = NotificationsPolicy(strict=StrictPolicy(services=["massage"]))


def booking_mail(body: str, *, to: str = "Jana Nováková <jana@example.cz>",
                 subject: str = "Your booking", cte: str = "quoted-printable",
                 html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Hotel Belvedere <desk@hotel.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body, charset="utf-8", cte=cte)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
    return msg


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email_policy.default)  # type: ignore[return-value]


def plain(data: bytes) -> str:
    return parsed(data).get_body(("plain",)).get_content()


def html_of(data: bytes) -> str:
    return parsed(data).get_body(("html",)).get_content()


# -- e-mail --------------------------------------------------------------------------


def test_quoted_printable_soft_line_break_does_not_hide_a_card() -> None:
    body = "x" * 70 + f" card {CARD} thanks\n"
    raw = booking_mail(body).as_bytes()
    assert b"=\n" in raw and CARD.encode() not in raw  # the number is split in transit
    outcome = Redactor(NotificationsPolicy()).redact_email(raw)
    assert not outcome.blocked
    text = plain(outcome.data)
    assert "**** **** **** 1111" in text and "4111" not in text
    part = parsed(outcome.data).get_body(("plain",))
    assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_base64_part_is_decoded_and_re_encoded_as_base64() -> None:
    raw = booking_mail(f"Karta {CARD}\n", cte="base64").as_bytes()
    outcome = Redactor(NotificationsPolicy()).redact_email(raw)
    part = parsed(outcome.data).get_body(("plain",))
    assert part["Content-Transfer-Encoding"] == "base64"
    assert "Karta **** **** **** 1111" in part.get_content()


def test_recipient_display_name_is_removed_everywhere_in_any_form() -> None:
    raw = booking_mail(
        "Dobrý den, paní Nováková,\nděkujeme paní Novákové. Jano, těšíme se.\n",
        subject="Rezervace pro paní Novákovou",
    ).as_bytes()
    outcome = Redactor(STRICT).redact_email(raw)
    assert not outcome.blocked, outcome.reason
    message = parsed(outcome.data)
    assert message["To"] == "jana@example.cz"
    assert message["Subject"] == "Rezervace pro paní [NAME]"
    assert plain(outcome.data) == "Dobrý den, paní [NAME],\nděkujeme paní [NAME]. [NAME], těšíme se.\n"
    assert {f.location for f in outcome.findings} >= {"header:To", "header:Subject"}


def test_german_genitive_of_the_recipient_is_removed() -> None:
    raw = booking_mail("Familie Müllers Zimmer ist bereit.\n", to="Thomas Müller <tm@example.de>")
    outcome = Redactor(STRICT).redact_email(raw.as_bytes())
    assert plain(outcome.data) == "Familie [NAME] Zimmer ist bereit.\n"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(f"<{tag} {' '.join(name for name, _ in attrs)}>")

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(f"</{tag}>")


def tag_structure(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def test_html_text_and_attributes_are_redacted_markup_untouched() -> None:
    html = (
        '<html><head><style>td{color:#4111}</style></head><body>'
        '<p class="greeting">Dear <b>Jana</b>,</p>'
        '<table><tr><td>Card</td><td>4111&nbsp;1111 1111 1111</td></tr></table>'
        '<a href="mailto:jana%40example.cz" title="Jana Nov&aacute;kov&aacute;">write</a>'
        '<img src="https://t.example/o.gif?e=jana@example.cz" alt=Jana>'
        '<!-- guest: Jana Nováková --><script>var n = "Jana";</script></body></html>'
    )
    raw = booking_mail("Dear Jana,\n", html=html).as_bytes()
    outcome = Redactor(STRICT).redact_email(raw)
    result = html_of(outcome.data)
    assert tag_structure(result) == tag_structure(html)
    assert "Jana" not in re.sub(r"<script>.*?</script>", "", result)
    assert "example.cz" not in result and "4111" not in result.replace("#4111", "")
    assert "td{color:#4111}" in result  # style blocks are not text
    assert '<p class="greeting">' in result


def test_attachments_keep_drop_block() -> None:
    msg = booking_mail("See the invoice.\n")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="invoice.pdf")
    raw = msg.as_bytes()

    kept = Redactor(NotificationsPolicy(attachments="keep")).redact_email(raw)
    assert kept.data == raw

    dropped = Redactor(NotificationsPolicy(attachments="drop")).redact_email(raw)
    assert [p.get_content_type() for p in parsed(dropped.data).walk()] == [
        "multipart/mixed", "text/plain",
    ]
    assert dropped.counts() == {"attachment": 1}

    blocked = Redactor(NotificationsPolicy(attachments="block")).redact_email(raw)
    assert blocked.blocked and "attachment" in (blocked.reason or "")
    assert "invoice" not in (blocked.reason or "")


def test_inline_logo_is_not_an_attachment_and_not_text() -> None:
    msg = booking_mail(f"Hello {CARD}\n", html='<p>Hello <img src="cid:logo"></p>')
    image = b"\x89PNG 4111111111111111 jana@example.cz"
    msg.get_payload()[1].add_related(image, maintype="image", subtype="png", cid="<logo>")
    outcome = Redactor(NotificationsPolicy(attachments="block")).redact_email(msg.as_bytes())
    assert not outcome.blocked
    (logo,) = [p for p in parsed(outcome.data).walk() if p.get_content_type() == "image/png"]
    assert logo.get_content() == image


def test_message_without_findings_is_returned_byte_for_byte() -> None:
    raw = booking_mail("Your room 12 is ready.\n", to="jana@example.cz").as_bytes().replace(b"\n", b"\r\n")
    assert Redactor(STRICT).redact_email(raw).data == raw


def test_crlf_line_endings_are_kept_when_rewriting() -> None:
    raw = booking_mail(f"Card {CARD}\n").as_bytes().replace(b"\n", b"\r\n")
    data = Redactor(NotificationsPolicy()).redact_email(raw).data
    assert b"\r\n" in data and re.search(rb"[^\r]\n", data) is None


def test_block_action_refuses_the_message_without_quoting_the_value() -> None:
    policy = NotificationsPolicy(actions={"passport": "block"})
    raw = booking_mail("Passport number: 533401872\n").as_bytes()
    outcome = Redactor(policy).redact_email(raw)
    assert outcome.blocked
    assert "passport" in (outcome.reason or "") and "533401872" not in (outcome.reason or "")


def test_strict_leftover_scan_blocks_what_redaction_left_behind() -> None:
    # A mask that leaves all sixteen digits visible removes nothing: strict mode notices.
    policy = NotificationsPolicy(
        actions={"card": {"mask": 16}}, strict=StrictPolicy(leftover="block")
    )
    outcome = Redactor(policy).redact_email(booking_mail(f"Card {CARD}\n").as_bytes())
    assert outcome.blocked and "card" in (outcome.reason or "")
    relaxed = policy.model_copy(update={"strict": StrictPolicy(leftover="keep")})
    assert not Redactor(relaxed).redact_email(booking_mail(f"Card {CARD}\n").as_bytes()).blocked


def test_unparseable_bytes_fail_closed_or_pass_through_unchanged() -> None:
    outcome = Redactor(NotificationsPolicy()).redact_email(b"\xff\xfe garbage without headers")
    assert outcome.blocked or b"4111" not in outcome.data


# -- HTTP bodies ---------------------------------------------------------------------

SMS = ChannelRule(name="sms", egress_host="api.sms.example", format="form", fields=["Body"],
                  recipient_field="To")
MAIL_API = ChannelRule(
    name="mail-api", egress_host="api.mail.example", format="json",
    fields=["message.text", "message.subject", "to[].name"], recipient_field="to[].email",
    name_fields=["to[].name"],
)


def test_form_body_recipient_kept_other_fields_byte_identical() -> None:
    body = (b"To=%2B447911123456&From=Hotel%20Belvedere&StatusCallback=https%3A%2F%2Fx&"
            b"Body=Hi+Jana%2C+card+4111111111111111%2C+call+%2B447911123456")
    outcome = Redactor(NotificationsPolicy()).redact_http_body(
        body, "application/x-www-form-urlencoded", SMS
    )
    pairs = outcome.data.split(b"&")
    assert pairs[:3] == body.split(b"&")[:3]
    assert pairs[3] == b"Body=Hi+Jana%2C+card+%2A%2A%2A%2A%2A%2A%2A%2A%2A%2A%2A%2A1111%2C+call+%5BPHONE%5D"
    assert {f.location for f in outcome.findings} == {"field:Body"}


def test_json_paths_names_from_name_fields_and_recipient_kept() -> None:
    body = json.dumps({
        "to": [{"email": "jana@example.cz", "name": "Jana Nováková"}],
        "message": {"subject": "Rezervace", "text": "Dobrý den paní Novákové, karta 4111111111111111"},
        "meta": {"note": "4111111111111111"},
    }).encode()
    outcome = Redactor(STRICT).redact_http_body(body, "application/json", MAIL_API)
    data = json.loads(outcome.data)
    assert data["to"] == [{"email": "jana@example.cz", "name": "[NAME]"}]
    assert data["message"]["text"] == "Dobrý den paní [NAME], karta ************1111"
    assert data["meta"]["note"] == "4111111111111111"  # not a listed field


def test_json_without_fields_redacts_every_string_and_number() -> None:
    channel = ChannelRule(name="any", egress_host="x.example", format="json")
    body = b'{"a": ["mail jana@example.cz"], "card": 4111111111111111, "ok": true}'
    data = json.loads(Redactor(NotificationsPolicy()).redact_http_body(body, None, channel).data)
    assert data == {"a": ["mail [EMAIL]"], "card": "************1111", "ok": True}


def test_drop_action_removes_the_field() -> None:
    policy = NotificationsPolicy(actions={"passport": "drop"})
    channel = ChannelRule(name="any", egress_host="x.example", format="json")
    body = b'{"text": "Passport number 533401872", "room": "12"}'
    assert json.loads(Redactor(policy).redact_http_body(body, None, channel).data) == {"room": "12"}
    form = ChannelRule(name="f", egress_host="x.example", format="form")
    out = Redactor(policy).redact_http_body(b"a=1&note=Passport+no.+533401872&b=2", None, form)
    assert out.data == b"a=1&b=2"


def test_multipart_text_fields_redacted_files_follow_the_attachment_rule() -> None:
    boundary = "XyZ"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n+447911123456\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nCard {CARD}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n"
        f"Content-Type: application/pdf\r\n\r\n%PDF\r\n--{boundary}--\r\n"
    ).encode()
    channel = ChannelRule(name="mp", egress_host="x.example", format="multipart", recipient_field="to")
    content_type = f"multipart/form-data; boundary={boundary}"
    outcome = Redactor(NotificationsPolicy(attachments="drop")).redact_http_body(body, content_type, channel)
    assert b"+447911123456" in outcome.data
    assert b"Card **** **** **** 1111\r\n" in outcome.data
    assert b"a.pdf" not in outcome.data and outcome.data.endswith(f"--{boundary}--\r\n".encode())
    blocked = Redactor(NotificationsPolicy(attachments="block")).redact_http_body(body, content_type, channel)
    assert blocked.blocked


def test_text_body_and_charset() -> None:
    channel = ChannelRule(name="t", egress_host="x.example", format="text")
    body = "Kč 120, karta 4111111111111111".encode("iso-8859-2")
    outcome = Redactor(NotificationsPolicy()).redact_http_body(body, "text/plain; charset=iso-8859-2", channel)
    assert outcome.data.decode("iso-8859-2") == "Kč 120, karta ************1111"


@pytest.mark.parametrize("fmt", ["json", "form", "multipart"])
def test_body_not_in_the_declared_format_is_still_redacted_as_text(fmt: str) -> None:
    channel = ChannelRule(name="c", egress_host="x.example", format=fmt)  # type: ignore[arg-type]
    outcome = Redactor(NotificationsPolicy()).redact_http_body(
        f"Dear guest, card {CARD}".encode(), None, channel
    )
    assert outcome.data == b"Dear guest, card **** **** **** 1111"



def test_html_context_and_values_across_nodes() -> None:
    html = (
        "<table><tr><th>Passport number</th><td>533401872</td></tr>"
        "<tr><th>Card</th><td><b>4111</b> 1111 1111 1111</td></tr></table>"
        "<p>Passport</p><p>Room 123456789</p>"
    )
    raw = booking_mail("See HTML\n", to="desk@example.cz", html=html).as_bytes()
    result = html_of(Redactor(NotificationsPolicy()).redact_email(raw).data)
    assert "<td>[PASSPORT]</td>" in result
    assert "<td><b>****</b> **** **** 1111</td>" in result
    assert "Room 123456789" in result  # a line break ends the context, as a full stop does
    assert tag_structure(result) == tag_structure(html)


def test_html_keeps_untouched_text_and_entities_byte_for_byte() -> None:
    html = "<p>Caf&eacute; &amp; bar, r&#233;servation, card 4111&nbsp;1111 1111 1111.</p>"
    msg = booking_mail("x\n", to="desk@example.cz", html=html)
    raw = msg.as_bytes()
    result = html_of(Redactor(NotificationsPolicy()).redact_email(raw).data)
    assert result.strip() == (
        "<p>Caf&eacute; &amp; bar, r&#233;servation, card ****&nbsp;**** **** 1111.</p>"
    )


def test_forwarded_message_attachment_follows_the_rule() -> None:
    inner = booking_mail(f"Card {CARD}\n", to="desk@example.cz")
    msg = booking_mail("Forwarding the old booking.\n", to="desk@example.cz")
    msg.add_attachment(inner)
    dropped = Redactor(NotificationsPolicy(attachments="drop")).redact_email(msg.as_bytes())
    assert b"4111" not in dropped.data and b"Forwarding" in dropped.data
    kept = Redactor(NotificationsPolicy()).redact_email(msg.as_bytes())
    assert b"4111 1111" not in kept.data  # kept, but its text is still redacted


def test_truncated_multipart_is_redacted_as_text() -> None:
    body = f'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nCard {CARD}'.encode()
    channel = ChannelRule(name="mp", egress_host="x.example", format="multipart")
    outcome = Redactor(NotificationsPolicy()).redact_http_body(
        body, "multipart/form-data; boundary=b", channel
    )
    assert b"4111 1111" not in outcome.data and outcome.data.endswith(b"**** 1111")
