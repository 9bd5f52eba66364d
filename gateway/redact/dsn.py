"""Delivery status notifications (RFC 3464 bounces) for mail the relay accepted and could not deliver.

Once the relay has answered 250 the PMS considers the mail sent, so a recipient the
smarthost refuses for good (or that is still not delivered when the queue lifetime ends)
must be reported back to the sender, as every MTA does: a `multipart/report;
report-type=delivery-status` message from the null sender `<>` with a human part, the
machine-readable `message/delivery-status` part and the original's headers only
(`text/rfc822-headers`: the body, even redacted, is not sent around again).

A message that is itself a bounce or an automatic reply is never bounced (`is_bounce`):
two MTAs bouncing each other's bounces is the classic mail loop.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str
    code: int  # the smarthost's reply code (0: no reply, e.g. expired while unreachable)
    reply: str  # its reply text, or why the relay gave up
    expired: bool = False

    @property
    def status(self) -> str:
        """RFC 3463 status: the enhanced code the smarthost gave, else one from its reply code."""
        if self.expired:
            return "4.4.7"  # delivery time expired
        match = _STATUS.search(self.reply)
        if match:
            return ".".join(match.groups())
        return f"{self.code // 100}.0.0" if 400 <= self.code < 600 else "5.0.0"


def header_block(raw: bytes) -> bytes:
    """The header section of a message, without the blank line and the body."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return raw[:end] + separator[: len(separator) // 2]
    return raw


def _headers(raw: bytes) -> email.message.Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block(raw))


def is_bounce(mail_from: str, raw: bytes) -> bool:
    """True for mail no bounce may answer: the null sender, `Auto-Submitted` other than
    `no` (RFC 3834), or a delivery report itself."""
    if not mail_from.strip("<> "):
        return True
    try:
        headers = _headers(raw)
    except Exception:  # noqa: BLE001 - unreadable headers: do not bounce what we cannot judge
        return True
    auto = str(headers.get("Auto-Submitted", "no")).split(";")[0].strip().lower()
    if auto and auto != "no":
        return True
    content_type = str(headers.get("Content-Type", "")).lower()
    return "multipart/report" in content_type and "delivery-status" in content_type


def build_dsn(
    *, reporting_mta: str, original: bytes, envelope_from: str, arrival: float, failures: list[FailedRecipient],
    now: float, dsn_id: str,
) -> bytes:
    """The bounce for `failures`, addressed to `envelope_from` (CRLF line ends)."""
    boundary = f"=_dsn_{dsn_id}"
    message_id = str(_headers(original).get("Message-ID", "")).strip()
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope_from}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{dsn_id}.dsn@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"The mail system at {reporting_mta} could not deliver your message"
        + (f" {message_id}" if message_id else "") + " to the recipient(s) below.",
        "It will not be retried. The message's headers follow; its body is not included.",
        "",
        *(f"<{f.address}>: " + ("delivery time expired; last reply: " if f.expired else "") + _one_line(f.reply)
          for f in failures),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {email.utils.formatdate(arrival)}",
        "",
    ]
    for failure in failures:
        lines += [
            f"Final-Recipient: rfc822; {failure.address}",
            "Action: failed",
            f"Status: {failure.status}",
            *([f"Diagnostic-Code: smtp; {_one_line(failure.reply)}"] if failure.code else []),
            f"Last-Attempt-Date: {email.utils.formatdate(now)}",
            "",
        ]
    lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    text = "\r\n".join(lines).encode("ascii", "replace") + b"\r\n"
    headers = header_block(original).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text + headers + f"\r\n--{boundary}--\r\n".encode()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]
