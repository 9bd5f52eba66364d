"""What a redaction pass reports: the rewritten message and what was found in it.

Shared by the engine (which produces it), the SMTP relay and the egress proxy (which act
on it) and the audit trail (which records counts, never values).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span. `start`/`end` index the decoded text of `location`."""

    detector: str
    start: int
    end: int
    action: str
    location: str = "body"


@dataclass(slots=True)
class Outcome:
    """The result of redacting one message.

    `blocked` means the message must not be sent at all (strict mode found something it
    could not remove, or a policy rule forbids the content); `reason` then says why in
    words an operator can act on, without quoting the sensitive value.
    """

    data: bytes
    findings: list[Finding] = field(default_factory=list)
    blocked: bool = False
    reason: str | None = None
    held: bool = False
    """The message could not be read whole: `blocked` too, and the SMTP relay keeps it in
    its hold queue for the operator rather than refusing it."""

    def counts(self) -> dict[str, int]:
        """Findings per detector: what the audit trail records."""
        return dict(Counter(f.detector for f in self.findings))
