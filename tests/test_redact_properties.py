"""Properties of redaction on arbitrary input: it never raises, redacting twice changes
nothing more than redacting once, no card number survives, HTML markup survives."""

from __future__ import annotations

import re
from email.message import EmailMessage
from html.parser import HTMLParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.redact.detectors.card import is_card_number, luhn_valid
from gateway.redact.engine import Redactor
from gateway.redact.formats.html import rewrite_html
from gateway.redact.policy import ChannelRule, NotificationsPolicy, StrictPolicy

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

STRICT = Redactor(
    NotificationsPolicy(
        detectors=["card", "iban", "email", "phone", "passport", "date_of_birth"],
        strict=StrictPolicy(services=["massage", "masáž"]),
        deny_list=["HIV"],
    )
)
HASHING = Redactor(
    NotificationsPolicy(actions={"phone": "hash", "email": {"mask": "last4"}, "iban": "drop"}),
    hash_key=b"k",
)
NAMES = ("Jana Nováková", "Thomas Müller")

FRAGMENTS = [
    "Dear Jana,", "Dobrý den, paní Nováková,", " Novákové ", "Familie Müllers ", "Guest: Petr Novák\n",
    " +44 20 7946 0958 ", "020 7946 0123", "DE89 3704 0044 0532 0130 00", " BIC COBADEFF",
    "Passport no. 533401872", "born 12.03.1985", " massages ", "jana@example.cz", "@", " ", "\n",
    "-", ".", ",", "0", "4", "1111", " 1111", "*", "[", "]", "=", "=\n", "&", "<", ">", "é",
]


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from(
        [("4", 16), ("4", 13), ("51", 16), ("2221", 16), ("34", 15), ("6011", 16), ("3530", 16),
         ("36", 14), ("6759", 19)]
    ))
    body = prefix + "".join(draw(st.lists(st.sampled_from("0123456789"),
                                          min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))
    number = next(body + str(d) for d in range(10) if luhn_valid(body + str(d)))
    layout = draw(st.sampled_from(["plain", "space", "dash"]))
    if layout == "plain":
        return number
    separator = " " if layout == "space" else "-"
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


notification_text = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(FRAGMENTS), card_numbers()), max_size=12
).map("".join)


@SETTINGS
@given(st.text())
def test_redact_text_never_raises_on_any_text(text: str) -> None:
    for redactor in (STRICT, HASHING):
        redactor.redact_text(text, NAMES)


@SETTINGS
@given(notification_text)
def test_redacting_twice_equals_redacting_once(text: str) -> None:
    for redactor in (STRICT, HASHING):
        once, _ = redactor.redact_text(text, NAMES)
        twice, findings = redactor.redact_text(once, NAMES)
        assert twice == once, findings


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=8), card_numbers()), max_size=6), card_numbers())
def test_no_card_number_survives(parts: list[str], card: str) -> None:
    """A card standing as its own token (as notifications write it) never leaves."""
    text = " ".join([*parts, card])
    redacted, _ = STRICT.redact_text(text)
    assert re.sub(r"\D", "", card) not in re.sub(r"[ \-]", "", redacted)
    for token in re.split(r"\s+", redacted):
        digits = token.replace("-", "")
        assert not (digits.isdigit() and is_card_number(digits)), token


@SETTINGS
@given(st.binary(max_size=400))
def test_redact_email_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    outcome = STRICT.redact_email(raw)
    assert isinstance(outcome.data, bytes)


mime_headers = st.lists(
    st.sampled_from([
        "Subject: Dear Jana, card 4111 1111 1111 1111", "To: Jana =?utf-8?q?Nov=C3=A1kov=C3=A1?= <j@x.cz>",
        "Content-Type: text/html; charset=utf-8", "Content-Type: text/plain; charset=bogus",
        "Content-Type: multipart/alternative; boundary=b", "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable", "Content-Disposition: attachment; filename=a",
        "Cc: \"Müller, Thomas\" <t@x.de>", "X-Junk: \x00\xff", "Subject: =?bogus?q?x?=",
    ]),
    max_size=5,
)


@SETTINGS
@given(mime_headers, st.lists(st.one_of(st.sampled_from(["--b", "--b--", "", "<p>", "</p>", "=3D", "4111=\n1111 1111 1111"]), notification_text), max_size=8))
def test_redact_email_on_mime_ish_input_never_raises_and_is_idempotent(
    headers: list[str], lines: list[str]
) -> None:
    raw = ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(lines)).encode("utf-8", "surrogatepass")
    first = STRICT.redact_email(raw)
    if first.blocked:
        assert first.reason
        return
    second = STRICT.redact_email(first.data)
    assert second.data == first.data


@SETTINGS
@given(notification_text, notification_text)
def test_well_formed_mail_keeps_no_card_and_is_idempotent(subject: str, body: str) -> None:
    message = EmailMessage()
    message["To"] = "Jana Nováková <jana@example.cz>"
    message["Subject"] = "".join(" " if c.isspace() or not c.isprintable() else c for c in subject)
    message.set_content(body + "\nCard 4111 1111 1111 1111\n", charset="utf-8", cte="quoted-printable")
    first = STRICT.redact_email(message.as_bytes())
    assert not first.blocked, first.reason
    assert "4111111111111111" not in re.sub(rb"[^0-9]", b"", first.data).decode()
    assert STRICT.redact_email(first.data).data == first.data


html_text = st.lists(
    st.one_of(
        notification_text,
        st.sampled_from([
            "<p>", "</p>", "<b>", "</b>", "<br>", "<a href=\"mailto:jana@example.cz\">", "</a>",
            "<img alt=Jana src='x?p=%2B442079460958'>", "<!-- Jana -->", "&amp;", "&nbsp;",
            "<script>var x = 'Jana';</script>", "<td title=\"4111 1111 1111 1111\">", "<",
        ]),
    ),
    max_size=12,
).map("".join)


class _Markup(HTMLParser):
    """The tag structure a browser-like parser sees: tag names and attribute names."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(f"<{tag} {' '.join(name for name, _ in attrs)}>")

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(f"</{tag}>")


def markup(html: str) -> list[str]:
    parser = _Markup()
    parser.feed(html)
    parser.close()
    return parser.tags


@SETTINGS
@given(html_text)
def test_html_rewriting_keeps_the_markup(html: str) -> None:
    result, _ = rewrite_html(html, "part", STRICT.rewriter(NAMES), STRICT.planner(NAMES))
    assert markup(result) == markup(html)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["form", "json", "multipart", "text"]),
       st.sampled_from([None, "text/plain; charset=utf-8", "multipart/form-data; boundary=b",
                        "application/json", "text/plain; charset=nope"]))
def test_http_bodies_never_raise(body: bytes, fmt: str, content_type: str | None) -> None:
    channel = ChannelRule(name="c", egress_host="x.example", format=fmt,  # type: ignore[arg-type]
                          recipient_field="To", name_fields=["name"])
    outcome = STRICT.redact_http_body(body, content_type, channel)
    assert isinstance(outcome.data, bytes)
