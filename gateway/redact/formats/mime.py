"""E-mail messages (RFC 5322 / MIME) as the SMTP relay receives them.

Parsed with the stdlib's compat32 policy, which keeps unchanged parts and headers byte
for byte; only a part whose text changed is re-encoded, with its original transfer
encoding (base64 stays base64, quoted-printable stays quoted-printable). Detection
always runs on decoded text, so a quoted-printable soft line break cannot split a card
number out of sight. A message nothing was found in is returned as the original bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from email import quoprimime
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import formataddr, getaddresses
from io import BytesIO
from typing import Literal

from gateway.redact.formats.base import Plan, Rewrite, Rewritten, drops_field
from gateway.redact.formats.html import rewrite_html, visible_text
from gateway.redact.names import decode_words, display_names
from gateway.redact.outcome import Finding

REDACTED_HEADERS: tuple[str, ...] = ("Subject",)
"""Headers whose text is redacted like a body."""

RECIPIENT_HEADERS: tuple[str, ...] = ("To", "Cc")
"""Headers whose display names name the guest (the addresses are the destination)."""

AttachmentRule = Literal["keep", "drop", "block"]


@dataclass(frozen=True, slots=True)
class _TextPart:
    location: str
    part: Message
    html: bool


def _decode(part: Message) -> tuple[str, str]:
    """The part's text and the charset that decodes it (declared, else UTF-8)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    declared = part.get_content_charset() or "us-ascii"
    for charset in (declared, "utf-8"):
        try:
            return data.decode(charset), charset
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("utf-8", "surrogateescape"), "utf-8"


def _encode(part: Message, text: str, charset: str) -> None:
    """Put `text` back into `part` with the part's own transfer encoding."""
    data = text.encode(charset, "surrogateescape")
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        payload = base64.encodebytes(data).decode("ascii")
    elif encoding == "quoted-printable":
        payload = quoprimime.body_encode(data.decode("latin-1"), maxlinelen=76, eol="\n")
    else:
        payload = data.decode("ascii", "surrogateescape")
    part.set_payload(payload)


def _set_header(message: Message, name: str, values: list[str]) -> None:
    """Replace a header's values, keeping its place when it occurs once."""
    if len(message.get_all(name, [])) == 1 and len(values) == 1:
        message.replace_header(name, values[0])
        return
    del message[name]
    for value in values:
        message[name] = value


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    maintype = part.get_content_maintype()
    if maintype in {"text", "multipart", "message"}:
        return False
    # Images embedded in the HTML (logos) are part of the message, not attachments.
    return not (maintype == "image" and part.get("Content-ID") is not None)


class MailDocument:
    """One e-mail message, parsed once, rewritten in place."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.linesep = "\r\n" if b"\r\n" in raw else "\n"
        self.message = BytesParser(policy=compat32).parsebytes(raw)

    def names(self) -> list[str]:
        """Display names of the recipients: the guest this message is about."""
        values = [str(v) for h in RECIPIENT_HEADERS for v in self.message.get_all(h, [])]
        return display_names(values)

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every text a reader sees (headers decoded, HTML as visible text)."""
        for header in REDACTED_HEADERS:
            for value in self.message.get_all(header, []):
                yield f"header:{header}", decode_words(str(value))
        for item in self._text_parts():
            text, _ = _decode(item.part)
            yield item.location, visible_text(text) if item.html else text

    def rewrite(self, rewrite: Rewrite, plan: Plan, display_name_action: str | None,
                attachments: AttachmentRule) -> Rewritten:
        """Redact headers, text parts and attachments; re-serialise only if changed."""
        findings: list[Finding] = []
        changed = self._rewrite_headers(rewrite, findings)
        changed |= self._rewrite_recipients(display_name_action, findings)
        changed |= self._apply_attachment_rule(self.message, "part:0", attachments, findings)
        for item in self._text_parts():
            changed |= self._rewrite_part(item, rewrite, plan, findings)
        if not changed:
            return Rewritten(self.raw, findings)
        return Rewritten(self._serialise(), findings)

    def _text_parts(self) -> Iterator[_TextPart]:
        for index, part in enumerate(self.message.walk()):
            if part.get_content_maintype() != "text" or _is_attachment(part):
                continue  # containers, embedded images, attachments
            subtype = part.get_content_subtype()
            yield _TextPart(f"part:{index}:text/{subtype}", part, subtype == "html")

    def _rewrite_headers(self, rewrite: Rewrite, findings: list[Finding]) -> bool:
        changed = False
        for header in REDACTED_HEADERS:
            values = self.message.get_all(header, [])
            if not values:
                continue
            new_values = []
            header_changed = False
            for value in values:
                text = decode_words(str(value))
                new, found = rewrite(f"header:{header}", text)
                findings.extend(found)
                if drops_field(found):
                    header_changed = True
                    continue
                header_changed |= new != text
                new_values.append(new if new != text else value)
            if header_changed:
                _set_header(self.message, header, new_values)
            changed |= header_changed
        return changed

    def _rewrite_recipients(self, action: str | None, findings: list[Finding]) -> bool:
        """Remove display names from To/Cc; the addresses stay (they are the destination)."""
        if action is None or action == "keep":
            return False
        changed = False
        for header in RECIPIENT_HEADERS:
            values = self.message.get_all(header, [])
            if not values:
                continue
            pairs = getaddresses([decode_words(str(v)) for v in values])
            if not any(name for name, _ in pairs):
                continue
            for name, _ in pairs:
                if name:
                    findings.append(Finding("name", 0, len(name), action, f"header:{header}"))
            addresses = ", ".join(formataddr(("", addr)) for _, addr in pairs if addr)
            _set_header(self.message, header, [addresses])
            changed = True
        return changed

    def _apply_attachment_rule(self, part: Message, location: str, rule: AttachmentRule,
                               findings: list[Finding]) -> bool:
        """Drop or flag attachments below `part`; returns whether the tree changed."""
        if not part.is_multipart():
            if part is self.message and _is_attachment(part) and rule != "keep":
                findings.append(Finding("attachment", 0, 0, rule, location))
                if rule == "drop":
                    part.set_payload("")
                    return True
            return False
        children = part.get_payload()
        if not isinstance(children, list):
            return False
        kept: list[Message] = []
        changed = False
        for index, child in enumerate(children):
            child_location = f"{location}.{index}"
            if _is_attachment(child) and rule != "keep":
                findings.append(Finding("attachment", 0, 0, rule, child_location))
                if rule == "drop":
                    changed = True
                    continue
            elif child.is_multipart():
                changed |= self._apply_attachment_rule(child, child_location, rule, findings)
            kept.append(child)
        if changed:
            part.set_payload(kept)
        return changed

    def _rewrite_part(self, item: _TextPart, rewrite: Rewrite, plan: Plan,
                      findings: list[Finding]) -> bool:
        text, charset = _decode(item.part)
        if item.html:
            new, found = rewrite_html(text, item.location, rewrite, plan)
        else:
            new, found = rewrite(item.location, text)
        findings.extend(found)
        if new == text:
            return False
        _encode(item.part, new, charset)
        return True

    def _serialise(self) -> bytes:
        out = BytesIO()
        generator = BytesGenerator(out, mangle_from_=False, maxheaderlen=0)
        generator.flatten(self.message, linesep=self.linesep)
        return out.getvalue()
