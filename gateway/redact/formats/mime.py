"""E-mail messages (RFC 5322 / MIME) as the SMTP relay receives them.

Parsed with the stdlib's compat32 policy, which keeps unchanged parts and headers byte
for byte; only a part whose text changed is re-encoded, with its original transfer
encoding (base64 stays base64, quoted-printable stays quoted-printable). Detection
always runs on decoded text, so a quoted-printable soft line break cannot split a card
number out of sight. A message nothing was found in is returned as the original bytes.

Everything a recipient's software can show is read: every header of every part (RFC 2047
encoded words decoded; display names of address headers), the multipart preamble and
epilogue, and every part whose content is text (text/*, JSON, XML, ...). A message that
cannot be read whole with certainty raises `NotFullyParsed`, and the relay holds it:
defects the parser reports (broken or missing boundaries, ...), a MIME header given twice,
a charset or transfer encoding nobody can decode, guest data where it cannot be removed
(an address, a MIME parameter, a binary part).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import quoprimime
from email.generator import BytesGenerator
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, formataddr, getaddresses
from io import BytesIO
from typing import Literal

from gateway.redact.formats.base import Plan, Rewrite, Rewritten, drops_field
from gateway.redact.formats.html import rewrite_html, visible_text
from gateway.redact.names import display_names
from gateway.redact.outcome import Finding

RECIPIENT_HEADERS: tuple[str, ...] = ("To", "Cc")
"""Headers whose display names name the guest (the addresses are the destination)."""

ADDRESS_HEADERS: frozenset[str] = frozenset({
    "from", "to", "cc", "bcc", "reply-to", "sender", "return-path", "resent-from", "resent-to",
    "resent-cc", "resent-bcc", "resent-sender", "disposition-notification-to", "delivered-to",
    "x-original-to", "errors-to",
})
"""Headers of addresses: display names are redacted, the addresses themselves are kept."""

ID_HEADERS: frozenset[str] = frozenset({"message-id", "in-reply-to", "references", "content-id", "resent-message-id"})
"""Headers of `<local@domain>` identifiers: scanned without reading them as e-mail addresses."""

MIME_HEADERS: frozenset[str] = frozenset({
    "content-type", "content-transfer-encoding", "content-disposition", "mime-version",
})
"""The structure of the message: read as parameters, never rewritten, never given twice."""

TEXT_APPLICATION_TYPES: frozenset[str] = frozenset({
    "application/json", "application/xml", "application/javascript", "application/ecmascript",
    "application/x-www-form-urlencoded", "application/csv", "application/yaml", "application/x-yaml",
    "application/rtf", "application/x-sh", "application/sql", "application/x-ndjson",
})
"""Non-`text/` types whose content is text a reader sees."""

TRANSFER_ENCODINGS: frozenset[str] = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable"})

# Checksummed detectors: what a binary part or an address must never carry.
CHECKSUMMED: frozenset[str] = frozenset({"card", "iban"})
# What a MIME parameter (a file name: "Booking 2024-0012345.pdf") often looks like without
# being guest data; everything else found there holds the message.
NUMBERS_IN_FILE_NAMES: frozenset[str] = frozenset({"phone", "date_of_birth"})

MEDIA: frozenset[str] = frozenset({"image", "audio", "video"})
"""Parts whose content is pixels or sound: an inline logo is passed as it is."""

AttachmentRule = Literal["keep", "drop", "block"]
BinaryCheck = Callable[[str], bool]
"""(text) -> whether a checksummed value (card, IBAN) is in it."""

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BOUNDARY = re.compile(r"""\bboundary\s*=\s*("[^"]*"|[^;\s]*)""", re.IGNORECASE)


def _repair(text: str) -> str:
    """Raw 8-bit bytes the parser kept as surrogates, read as UTF-8 (RFC 6532)."""
    if not any("\udc80" <= char <= "\udcff" for char in text):
        return text
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise NotFullyParsed("a header holds bytes that are not UTF-8") from None


class NotFullyParsed(ValueError):
    """The message cannot be read and scanned whole with certainty: it must not be sent.

    The message says why in words an operator can act on, never quoting content."""


@dataclass(frozen=True, slots=True)
class _TextPart:
    location: str
    part: Message
    html: bool


# ---------------------------------------------------------------- reading


def decode_header_value(value: object) -> str:
    """A header's text as a reader sees it: unfolded, RFC 2047 words decoded, strictly.

    An encoded word in an unknown charset, or bytes that its charset does not decode,
    raise `NotFullyParsed`: a header read half-way could carry anything."""
    source = value if isinstance(value, Header) else _FOLD.sub("", str(value))
    try:
        # compat32 hands raw 8-bit header bytes over as a Header in "unknown-8bit".
        pieces = decode_header(source)
    except Exception:  # noqa: BLE001 - any failure of the decoder is a parse failure
        raise NotFullyParsed("a header's encoded words cannot be decoded") from None
    out = []
    for piece, charset in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        if charset == "unknown-8bit":
            charset = "utf-8"  # raw 8-bit headers are UTF-8 (RFC 6532) or unreadable
        try:
            out.append(_FOLD.sub("", piece.decode(charset or "raw-unicode-escape")))
        except LookupError:
            raise NotFullyParsed(f"a header is encoded in an unknown charset ({charset!r:.40})") from None
        except UnicodeError:
            raise NotFullyParsed(f"a header does not decode in its charset ({charset!r:.40})") from None
    # decode_header already dropped the space between adjacent encoded words (RFC 2047, 6.2).
    return "".join(out)


def _textish(part: Message) -> bool:
    """Whether a reader sees this part's content as text."""
    ctype = part.get_content_type()
    maintype, subtype = ctype.split("/", 1)
    if maintype == "text":
        return True
    if maintype == "message":
        return not part.is_multipart()  # message/rfc822 is walked as a message
    return ctype in TEXT_APPLICATION_TYPES or subtype.endswith(("+json", "+xml"))


def _decode(part: Message) -> tuple[str, str]:
    """The part's text and the charset that decodes it (declared, else UTF-8)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    declared = part.get_content_charset() or "us-ascii"
    try:
        b"".decode(declared)
    except LookupError:
        raise NotFullyParsed(f"a part is in an unknown charset ({declared!r:.40})") from None
    for charset in (declared, "utf-8"):
        try:
            return data.decode(charset), charset
        except UnicodeDecodeError:
            continue
    raise NotFullyParsed(f"a part does not decode as its charset ({declared!r:.40}) nor as UTF-8")


def _check_other_reading(item: _TextPart, text: str, charset: str, plan: Plan) -> None:
    """A part labelled with a one-byte charset whose bytes are UTF-8 is read both ways by
    mail clients (many guess); what the UTF-8 reading shows must be found in the declared
    one too, or the part cannot be redacted with certainty."""
    if charset.replace("-", "").lower() in ("utf8", "usascii"):
        return
    data = text.encode(charset, "surrogateescape")
    if data.isascii():
        return
    try:
        other = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    if len(plan(item.location, other)) > len(plan(item.location, text)):
        raise NotFullyParsed(f"{item.location} is labelled {charset!r:.40} but reads differently as UTF-8")


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


def _readings(part: Message, data: bytes) -> list[str]:
    """A binary part read as text every way a viewer might: in the charset it declares (a
    UTF-16 "octet-stream"), as UTF-8 (a card written with zero-width characters between
    its groups is UTF-8 whatever the label says), and byte for byte, where ASCII digits
    stay digits."""
    readings = []
    for charset in (part.get_content_charset(), "utf-8"):
        if charset:
            try:
                readings.append(data.decode(charset))
            except (LookupError, UnicodeDecodeError):
                pass
    readings.append(data.decode("latin-1"))
    return readings


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    maintype = part.get_content_maintype()
    if maintype in {"text", "multipart", "message"}:
        return False
    # Images embedded in the HTML (logos) are part of the message, not attachments.
    return not (maintype == "image" and part.get("Content-ID") is not None)


def _check_structure(message: Message) -> None:
    """Raise `NotFullyParsed` unless every part was parsed without a doubt."""
    for index, part in enumerate(message.walk()):
        for name in MIME_HEADERS:
            if len(part.get_all(name, [])) > 1:
                raise NotFullyParsed(f"part {index} has {name} more than once")
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoding not in TRANSFER_ENCODINGS:
            raise NotFullyParsed(f"part {index} has an unknown transfer encoding ({encoding!r:.40})")
        if not part.is_multipart():
            part.get_payload(decode=True)  # records decoding defects (bad base64) on the part
        if part.defects:
            kinds = ", ".join(sorted({type(d).__name__ for d in part.defects}))
            raise NotFullyParsed(f"part {index} is malformed ({kinds})")
        if part.get_content_maintype() == "multipart" and not (part.is_multipart() and part.get_boundary()):
            raise NotFullyParsed(f"part {index} is malformed (multipart, but no parts were found)")


# ---------------------------------------------------------------- the document


class MailDocument:
    """One e-mail message, parsed once, rewritten in place.

    Raises `NotFullyParsed` when the message cannot be read whole."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.linesep = "\r\n" if b"\r\n" in raw else "\n"
        self.message = BytesParser(policy=compat32).parsebytes(raw)
        _check_structure(self.message)

    def names(self) -> list[str]:
        """Display names of the recipients: the guest this message is about."""
        values = [decode_header_value(v) for h in RECIPIENT_HEADERS for v in self.message.get_all(h, [])]
        return display_names(values)

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every text a reader sees (headers decoded, HTML as visible text)."""
        for index, part in enumerate(self.message.walk()):
            for name, value in part.items():
                yield f"header:{index}:{name}", decode_header_value(value)  # names only: no rewrite
            for where, text in (("preamble", part.preamble), ("epilogue", part.epilogue)):
                if text:
                    yield f"{where}:{index}", _repair(text)
        for item in self._text_parts():
            text, _ = _decode(item.part)
            yield item.location, visible_text(text) if item.html else text

    def rewrite(self, rewrite: Rewrite, plan: Plan, display_name_action: str | None,
                attachments: AttachmentRule, binary: BinaryCheck | None = None) -> Rewritten:
        """Redact headers, text parts and attachments; re-serialise only if changed.

        `binary` checks the parts that are neither text nor dropped: a checksummed value
        in one (it cannot be removed from an image or a PDF) makes the message unsendable.
        """
        findings: list[Finding] = []
        changed = self._apply_attachment_rule(self.message, "part:0", attachments, findings)
        for index, part in enumerate(self.message.walk()):
            location = "header" if part is self.message else f"header:{index}"
            headers = _Headers(part, location, rewrite, plan, findings)
            changed |= headers.rewrite(display_name_action if part is self.message else None)
            changed |= self._rewrite_framing(part, index, rewrite, findings)
        for item in self._text_parts():
            changed |= self._rewrite_part(item, rewrite, plan, findings)
        if binary is not None:
            self._check_binary_parts(binary)
        if not changed:
            return Rewritten(self.raw, findings)
        return Rewritten(self._serialise(), findings)

    def _text_parts(self) -> Iterator[_TextPart]:
        for index, part in enumerate(self.message.walk()):
            if part.is_multipart() or not _textish(part):
                continue  # containers, images, binary attachments
            subtype = part.get_content_subtype()
            yield _TextPart(f"part:{index}:{part.get_content_type()}", part, subtype == "html")

    def _rewrite_framing(self, part: Message, index: int, rewrite: Rewrite, findings: list[Finding]) -> bool:
        """The text before the first and after the last boundary of a multipart."""
        changed = False
        for where in ("preamble", "epilogue"):
            raw = getattr(part, where)
            if not raw:
                continue
            text = _repair(raw)
            new, found = rewrite(f"{where}:{index}", text)
            findings.extend(found)
            if new != text or drops_field(found):
                # Back to the parser's form: raw bytes as surrogates, written out unchanged.
                new = "" if drops_field(found) else new.encode("utf-8").decode("ascii", "surrogateescape")
                setattr(part, where, new)
                changed = True
        return changed

    def _check_binary_parts(self, binary: BinaryCheck) -> None:
        for index, part in enumerate(self.message.walk()):
            if part.is_multipart() or _textish(part) or part.get_content_maintype() in MEDIA:
                continue
            data = part.get_payload(decode=True)
            if isinstance(data, bytes) and data and any(binary(text) for text in _readings(part, data)):
                raise NotFullyParsed(f"part {index} ({part.get_content_type()}) carries a card or account "
                                     "number that cannot be removed from it")

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
        _check_other_reading(item, text, charset, plan)
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


class _Headers:
    """The headers of one part, each redacted the way its kind allows."""

    def __init__(self, part: Message, location: str, rewrite: Rewrite, plan: Plan,
                 findings: list[Finding]) -> None:
        self.part, self.location = part, location
        self._rewrite, self._plan, self.findings = rewrite, plan, findings

    def rewrite(self, display_name_action: str | None) -> bool:
        """Rewrite every header in place (order kept); returns whether any changed."""
        items = self.part.items()
        new_items: list[tuple[str, object]] = []
        changed = False
        for name, value in items:
            key = name.lower()
            where = f"{self.location}:{name}"
            if key in MIME_HEADERS:
                self._check_mime(key, where)
                new: object | None = value
            elif key in ADDRESS_HEADERS:
                remove_names = display_name_action not in (None, "keep") and name.title() in RECIPIENT_HEADERS
                new = self._addresses(value, where, display_name_action if remove_names else None)
            elif key in ID_HEADERS:
                new = self._identifiers(value, where)
            else:
                new = self._text(value, where)
            if new is not value:
                changed = True
            if new is not None:
                new_items.append((name, new))
        if changed:
            for name in {name for name, _ in items}:
                del self.part[name]
            for name, value in new_items:
                self.part[name] = value
        return changed

    def _text(self, value: object, where: str) -> object | None:
        """A free-text header (Subject, X-...): redacted like a body; None drops it."""
        text = decode_header_value(value)
        new, found = self._rewrite(where, text)
        self.findings.extend(found)
        if drops_field(found):
            return None
        return value if new == text else _header(new)

    def _identifiers(self, value: object, where: str) -> object:
        """Message-ID and the like: read with `@` blanked, so the e-mail detector does not
        take every identifier for an address; what other detectors find is replaced."""
        text = decode_header_value(value)
        edits = self._plan(where, text.replace("@", " "))
        if not edits:
            return value
        pieces, position = [], 0
        for edit in edits:
            pieces += [text[position:edit.start], edit.replacement]
            position = edit.end
            self.findings.append(edit.finding)
        return _header("".join(pieces) + text[position:])

    def _addresses(self, value: object, where: str, remove_names: str | None) -> object:
        """Display names redacted (or removed from To/Cc when the policy redacts names);
        the addresses stay. Guest data anywhere else in the header holds the message."""
        text = decode_header_value(value)
        significant = [e for e in self._plan(where, text) if e.finding.detector != "email"]
        pairs = getaddresses([text])
        if not significant and not (remove_names and any(name for name, _ in pairs)):
            self._check_addresses(pairs, where)
            return value
        rebuilt = []
        for name, address in pairs:
            if name and remove_names:
                self.findings.append(Finding("name", 0, len(name), remove_names, where))
                name = ""
            elif name:
                name, found = self._rewrite(where, name)
                self.findings.extend(found)
            if name or address:
                rebuilt.append(formataddr((name, address)))
        new = ", ".join(rebuilt)
        if any(e.finding.detector != "email" for e in self._plan(where, decode_header_value(new))):
            raise NotFullyParsed(f"{where.rsplit(':', 1)[-1]} carries guest data outside a display name")
        self._check_addresses(pairs, where)
        return new

    def _check_addresses(self, pairs: list[tuple[str, str]], where: str) -> None:
        for _, address in pairs:
            if any(e.finding.detector in CHECKSUMMED for e in self._plan(where, address.replace("@", " "))):
                raise NotFullyParsed(f"an address in {where.rsplit(':', 1)[-1]} carries a card or account number")

    def _check_mime(self, key: str, where: str) -> None:
        """Parameters (a file name, a charset) are read; guest data in them holds the message,
        since rewriting the structure could change how the message is read."""
        # The boundary is structure (generated, never shown): left out.
        texts = [_BOUNDARY.sub("", decode_header_value(self.part.get(key, "")))]
        if key in ("content-type", "content-disposition"):
            for param, param_value in self.part.get_params([], header=key):
                if param_value and param.lower() != "boundary":  # RFC 2231 values decoded too
                    texts.append(decode_header_value(_repair(collapse_rfc2231_value(param_value))))
        text = " ; ".join(texts)
        if any(e.finding.detector not in NUMBERS_IN_FILE_NAMES for e in self._plan(where, text)):
            raise NotFullyParsed(f"guest data in the {key} header of a part (a file name?)")


def _header(text: str) -> str | Header:
    """A header value as it goes on the wire: as is when ASCII, else RFC 2047 UTF-8."""
    return text if text.isascii() else Header(text, "utf-8")
