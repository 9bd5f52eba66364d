"""The redaction engine: finds guest data in outbound notifications and rewrites it.

Callers (the SMTP relay, the egress proxy addon, the `redact` command) hold one
`Redactor` per policy and call it per message. This first version fixes the interface;
it returns messages unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.redact.outcome import Finding, Outcome
from gateway.redact.policy import ChannelRule, NotificationsPolicy


class Redactor:
    """Applies one `NotificationsPolicy` to texts, e-mails and HTTP bodies."""

    def __init__(self, policy: NotificationsPolicy, hash_key: bytes = b"") -> None:
        self.policy = policy
        self._hash_key = hash_key

    def redact_text(self, text: str, names: Iterable[str] = ()) -> tuple[str, list[Finding]]:
        return text, []

    def redact_email(self, raw: bytes) -> Outcome:
        return Outcome(data=raw)

    def redact_http_body(
        self, body: bytes, content_type: str | None, channel: ChannelRule
    ) -> Outcome:
        return Outcome(data=body)
