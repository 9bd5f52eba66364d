"""IBANs, validated by python-stdnum (country length and format, mod-97 checksum).

The candidate pattern is deliberately loose (groups of letters and digits after a
country code and check digits); the checksum decides. Because a loose pattern also
swallows the word after an IBAN ("... 00 BIC"), every shorter prefix is tried too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from stdnum import iban

from gateway.redact.detectors.base import Candidate

_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \u00a0]?[A-Za-z0-9]){11,30}")
_MIN_LENGTH = 15


class IbanDetector:
    """Finds IBANs written compact or in groups of four."""

    name = "iban"

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        position = 0
        while True:
            match = _CANDIDATE.search(text, position)
            if match is None:
                return
            end = self._valid_end(match.group())
            if end is None:
                position = match.start() + 1
                continue
            yield Candidate(self.name, match.start(), match.start() + end)
            position = match.start() + end

    @staticmethod
    def _valid_end(candidate: str) -> int | None:
        """Length of the longest prefix of `candidate` that is a valid IBAN."""
        for end in range(len(candidate), 0, -1):
            if not candidate[end - 1].isalnum():
                continue
            if end < len(candidate) and candidate[end].isalnum():
                continue  # would cut a group in the middle
            compact = re.sub(r"\s", "", candidate[:end]).upper()
            if len(compact) < _MIN_LENGTH:
                return None
            if iban.is_valid(compact):
                return end
        return None
