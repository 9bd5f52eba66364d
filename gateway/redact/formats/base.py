"""The contract between the engine and the format modules.

A format module knows where text lives in one kind of message (e-mail headers and MIME
parts, form fields, JSON paths, multipart parts) and how to put rewritten text back
without breaking the encoding. It knows nothing about detectors or policy actions: it
calls a `Rewrite` for every text, and the engine decides what the text becomes. Where
one logical text is spread over several pieces (HTML text nodes), the format asks for a
`Plan` instead - the edits, without applying them - and applies them piece by piece.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.redact.outcome import Finding

Rewrite = Callable[[str, str], tuple[str, list[Finding]]]
"""(location, text) -> (new text, findings). A finding with action `drop` asks the
format to remove the whole field when it can."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace `text[start:end]` with `replacement`, because of `finding`."""

    start: int
    end: int
    replacement: str
    finding: Finding


Plan = Callable[[str, str], list[Edit]]
"""(location, text) -> the edits one redaction pass would make, in text order."""


@dataclass(slots=True)
class Rewritten:
    """A format's result: new bytes (or the original if nothing changed)."""

    data: bytes
    findings: list[Finding] = field(default_factory=list)


class UnparsableBody(ValueError):
    """The body is not in the format its channel declares."""


def drops_field(findings: list[Finding]) -> bool:
    """Whether the policy asked to drop the whole field this text came from."""
    return any(f.action == "drop" for f in findings)
