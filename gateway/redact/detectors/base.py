"""What every detector produces, and the one method it must offer.

Detectors only find; they never rewrite. Keeping them free of policy actions lets the
engine run them twice (redaction, then the strict leftover scan) and lets the accuracy
bench measure them on their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Candidate:
    """A span of `text[start:end]` that detector `detector` believes is sensitive."""

    detector: str
    start: int
    end: int


class Detector(Protocol):
    """Finds one kind of sensitive value in a text."""

    name: str

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        """Yield candidates; `names` are the guest names known for this message."""
        ...
