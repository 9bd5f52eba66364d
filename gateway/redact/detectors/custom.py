"""Operator-defined regular expressions from the policy's `custom_patterns:`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from gateway.redact.detectors.base import Candidate
from gateway.redact.policy import CustomPattern


class PatternDetector:
    """Reports every non-empty match of one custom pattern under the pattern's name."""

    def __init__(self, rule: CustomPattern) -> None:
        self.name = rule.name
        self._pattern = re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        for match in self._pattern.finditer(text):
            if match.end() > match.start():
                yield Candidate(self.name, match.start(), match.end())
