"""The hand-written notification set (tests/data/notifications/handwritten/), scored.

Each message is read the way the gateway reads it - an SMS as text, an e-mail as the
relay parses it (HTML as a reader sees it), an API call through its provider preset's
channel - and scored twice:

- detection, per detector: the labelled spans against what the detectors report on
  each text the engine scans (recall: every letter and digit of a labelled value
  covered by its detector; precision: a reported span overlaps a label of its type);
- end to end: the real pipeline (`redact_text`, `redact_email`, `redact_http_body`)
  rewrites the message, and the result, decoded as a reader would read it, must no
  longer show any labelled value (`leaks`) and must still show every `keep` value
  (booking references, amounts, dates, rooms, recipients: `kept`).

Labels are carried through parsing as private-use characters around each value, so a
span is found wherever the format puts its text (a JSON string, a URL-encoded form
field, an HTML node split by tags and entities).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from gateway.redact.engine import Redactor
from gateway.redact.formats.bodies import parse_body
from gateway.redact.formats.html import visible_text
from gateway.redact.names import display_names
from gateway.redact.policy import ChannelRule, NotificationsPolicy, StrictPolicy
from gateway.redact.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
HANDWRITTEN = ROOT / "tests" / "data" / "notifications" / "handwritten"
PII_TYPES = ("card", "iban", "email", "phone", "passport", "date_of_birth", "name", "service")
SERVICES: dict[str, list[str]] = {
    "massage": ["Massage", "masáž", "massaggio", "masaje", "masaż", "massaje"],
    "physiotherapy": ["Physiotherapie", "fyzioterapie", "kinésithérapie", "fisioterapia",
                      "fysiotherapie", "fizjoterapia", "fyzioterapia"],
    "facial": ["Gesichtsbehandlung", "soin du visage", "ošetření pleti", "trattamento viso"],
    "Botox": ["botulinum"],
}
"""The spa and clinic treatments a strict operator would list, with translations."""

_OPEN, _CLOSE = "\ue000", "\ue002"
_TYPE_BASE = 0xE010
_LABEL = re.compile(r"\{\{([a-z_]+)\|(.*?)\}\}", re.S)
_MARKED = re.compile(f"{_OPEN}(.)(.*?){_CLOSE}", re.S)
_HEADER = re.compile(r"^### (\S+) \| (\S+) \| (\S+) \| (.*)$")


@dataclass
class Unit:
    """One text the engine scans, with the labelled spans in it."""

    text: str
    spans: list[tuple[str, int, int]]


@dataclass
class Message:
    ident: str
    kind: str
    lang: str
    recipient: str | None
    source: bytes  # clean message, as the PMS sends it
    marked: bytes  # the same with labelled values between private-use marks
    keeps: list[str] = field(default_factory=list)  # reader-form values to keep
    secrets: list[tuple[str, str]] = field(default_factory=list)  # (type, reader-form value)
    raw_mail: tuple[bytes, bytes] | None = None  # SES raw: (clean, marked) e-mail

    @property
    def preset(self) -> str | None:
        return self.kind.split(":", 1)[1] if self.kind.startswith("api:") else None


def strict_policy(region: str = "GB") -> NotificationsPolicy:
    """Every detector on, names and the treatments above redacted (strict mode)."""
    return NotificationsPolicy(
        default_region=region,
        detectors=list(PII_TYPES[:6]),
        strict=StrictPolicy(names="redact", services=SERVICES, leftover="keep"),
    )


def _mark(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(clean text, marked text, labels) from `{{type|value}}` markup."""
    labels: list[tuple[str, str]] = []

    def clean(match: re.Match[str]) -> str:
        labels.append((match.group(1), match.group(2)))
        return match.group(2)

    def marked(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "keep":
            return match.group(2)
        return _OPEN + chr(_TYPE_BASE + PII_TYPES.index(kind)) + match.group(2) + _CLOSE

    return _LABEL.sub(clean, text), _LABEL.sub(marked, text), labels


def unmark(text: str) -> Unit:
    """A scanned text with its labels taken out and turned into spans."""
    spans: list[tuple[str, int, int]] = []
    out: list[str] = []
    length = 0
    position = 0
    for match in _MARKED.finditer(text):
        before = text[position : match.start()]
        out.append(before)
        length += len(before)
        value = match.group(2)
        spans.append((PII_TYPES[ord(match.group(1)) - _TYPE_BASE], length, length + len(value)))
        out.append(value)
        length += len(value)
        position = match.end()
    out.append(text[position:])
    return Unit("".join(out), spans)


def load(directory: Path) -> list[Message]:
    """The messages of every `*.txt` file under `directory`."""
    messages: list[Message] = []
    for path in sorted(directory.glob("*.txt")):
        blocks = re.split(r"(?m)^(?=### )", path.read_text(encoding="utf-8"))
        for block in blocks:
            if not block.startswith("### "):
                continue
            header, _, body = block.partition("\n")
            match = _HEADER.match(header)
            if match is None:
                raise ValueError(f"{path.name}: bad header {header!r}")
            ident, kind, lang, recipient = match.groups()
            body = body.rstrip("\n") + ("\n" if kind == "email" else "")
            messages.append(_message(ident, kind, lang, recipient.strip(), body))
    return messages


def _message(ident: str, kind: str, lang: str, recipient: str, body: str) -> Message:
    raw_mail = None
    if "\n--- raw\n" in body:
        body, raw = body.split("\n--- raw\n", 1)
        raw_clean, raw_marked, raw_labels = _mark(raw.rstrip("\n") + "\n")
        raw_mail = (raw_clean.encode(), raw_marked.encode())
        b64 = base64.b64encode(raw_mail[0]).decode()
        body = body.replace("@@RAW@@", b64)
    else:
        raw_labels = []
    clean, marked, labels = _mark(body)
    if raw_mail:
        marked = marked.replace(base64.b64encode(raw_mail[0]).decode(), "")
    labels += raw_labels
    form = "api:" in kind and PRESETS[kind[4:]].format != "json" and not clean.lstrip().startswith(("{", "["))
    reader = (lambda v: unquote_plus(v)) if form else (lambda v: v)
    keeps, secrets = [], []
    for label, value in labels:
        value = reader(value)
        if "&" in value or "<" in value:
            value = visible_text(value)
        value = value.replace("\u00a0", " ")
        (keeps.append(value) if label == "keep" else secrets.append((label, value)))
    return Message(ident, kind, lang, None if recipient == "-" else recipient,
                   clean.encode(), marked.encode(), keeps, secrets, raw_mail)


# -- how the engine reads each kind ---------------------------------------------------


def channel_for(preset: str) -> ChannelRule:
    return ChannelRule(preset=preset)  # type: ignore[call-arg]


def content_type(message: Message) -> str:
    if message.source.lstrip()[:1] in (b"{", b"["):
        return "application/json"
    return "application/x-www-form-urlencoded"


def _mail_units(raw: bytes) -> tuple[list[Unit], list[str]]:
    """The texts of an e-mail as the relay scans them (Subject, decoded body parts), and
    the display names of its address headers."""
    message = message_from_bytes(raw, policy=email_policy.default)
    units = [unmark(str(message.get("Subject", "")))]
    names = display_names([str(v) for v in message.get_all("To", [])])
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        content = _decoded(part)
        if part.get_content_subtype() == "html":
            content = visible_text(content)
        units.append(unmark(content))
    return units, names


def _decoded(part: Any) -> str:
    """A text part's content; 8-bit text without a declared charset read as UTF-8."""
    payload = part.get_payload(decode=True) or b""
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


def units_of(redactor: Redactor, message: Message) -> tuple[list[Unit], list[str]]:
    """The scanned texts of a message, and the guest names the engine knows for it."""
    if message.kind == "sms":
        unit = unmark(message.marked.decode())
        return [unit], redactor.known_names([unit.text])
    if message.kind == "email":
        units, names = _mail_units(message.marked)
        return units, redactor.known_names([u.text for u in units], names)
    channel = channel_for(message.preset or "")
    marked_doc = parse_body(message.marked, content_type(message), channel)
    units = []
    for location, text in marked_doc.texts():
        if location.startswith("html:"):
            units.append(unmark(visible_text(text)))
        elif not location.startswith("mime:"):
            units.append(unmark(text))
    clean_doc = parse_body(message.source, content_type(message), channel)
    names = redactor._document_names(clean_doc)  # noqa: SLF001 - the engine's own reading
    if message.raw_mail:
        mail_units, mail_names = _mail_units(message.raw_mail[1])
        units += mail_units
        names = redactor.known_names([u.text for u in mail_units], [*names, *mail_names])
    return units, names


def redact(redactor: Redactor, message: Message) -> bytes:
    """The message as the gateway would send it."""
    if message.kind == "sms":
        return redactor.redact_text(message.source.decode())[0].encode()
    if message.kind == "email":
        return redactor.redact_email(message.source).data
    channel = channel_for(message.preset or "")
    return redactor.redact_http_body(message.source, content_type(message), channel).data


def reader_view(message: Message, data: bytes) -> str:
    """What a recipient (or the provider) reads in a message: decoded, markup removed."""
    if message.kind == "sms":
        return data.decode()
    if message.kind == "email":
        return _mail_view(data)
    if content_type(message) == "application/json":
        texts: list[str] = []
        _json_texts(json.loads(data), texts, message)
        return "\n".join(texts)
    return "\n".join(f"{k}\n{_html_view(v)}" for k, v in parse_qsl(data.decode(), keep_blank_values=True))


def _html_view(text: str) -> str:
    return visible_text(text).replace("\u00a0", " ") if "<" in text or "&" in text else text


def _mail_view(data: bytes) -> str:
    message = message_from_bytes(data, policy=email_policy.default)
    texts = [str(message.get("Subject", "")), str(message.get("To", ""))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            texts.append(_html_view(_decoded(part)))
    return "\n".join(texts)


def _json_texts(node: Any, out: list[str], message: Message) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _json_texts(value, out, message)
    elif isinstance(node, list):
        for value in node:
            _json_texts(value, out, message)
    elif isinstance(node, str):
        if message.raw_mail and len(node) > 40 and re.fullmatch(r"[A-Za-z0-9+/=]+", node):
            out.append(_mail_view(base64.b64decode(node)))
        else:
            out.append(_html_view(node))
    elif node is not None and not isinstance(node, bool):
        out.append(str(node))
