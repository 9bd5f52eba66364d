"""Detectors for guest data in notification text, and the set the policy enables.

`DetectorSet.find` runs the enabled detectors on the visible text and resolves overlaps: overlapping spans
merge into one, reported under the detector of its longest member (so a card number
inside an e-mail address, or an IBAN whose digits pass Luhn, is one finding, and a
second redaction pass finds nothing new).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.redact.detectors.allow import AllowList
from gateway.redact.detectors.base import Candidate, Detector
from gateway.redact.detectors.card import CardDetector, is_card_number, luhn_valid
from gateway.redact.detectors.contact import EmailDetector, PhoneDetector
from gateway.redact.detectors.custom import PatternDetector
from gateway.redact.detectors.iban import IbanDetector
from gateway.redact.detectors.identity import DateOfBirthDetector, PassportDetector
from gateway.redact.detectors.invisible import VisibleText
from gateway.redact.detectors.terms import NameDetector, TermDetector
from gateway.redact.policy import NotificationsPolicy

__all__ = [
    "Candidate",
    "Detector",
    "DetectorSet",
    "is_card_number",
    "luhn_valid",
]

# Tie-break between equally long overlapping spans: checksummed detectors first.
PRIORITY: tuple[str, ...] = (
    "card",
    "iban",
    "email",
    "passport",
    "date_of_birth",
    "phone",
    "name",
    "service",
    "deny_list",
)


def _build(policy: NotificationsPolicy) -> list[Detector]:
    enabled = policy.enabled()
    available: dict[str, Detector] = {
        "card": CardDetector(),
        "iban": IbanDetector(),
        "email": EmailDetector(),
        "phone": PhoneDetector(policy.default_region, policy.phone_regions),
        "passport": PassportDetector(policy.passport_patterns, policy.context_window),
        "date_of_birth": DateOfBirthDetector(policy.date_of_birth_context, policy.context_window),
        "name": NameDetector(),
        "service": TermDetector("service", policy.strict.service_terms if policy.strict else ()),
        "deny_list": TermDetector("deny_list", policy.deny_list),
    }
    detectors = [d for name, d in available.items() if name in enabled]
    detectors += [PatternDetector(rule) for rule in policy.custom_patterns]
    return detectors


class DetectorSet:
    """The detectors one policy enables, run together."""

    def __init__(self, policy: NotificationsPolicy) -> None:
        self.detectors = _build(policy)
        self._allow = AllowList(policy.allow_list, policy.default_region)

    def find(self, text: str, names: Sequence[str] = ()) -> list[Candidate]:
        """Non-overlapping findings in text order.

        Detectors see the text as a reader does (zero-width characters and soft hyphens
        left out); the spans they return index the original text.
        """
        visible = VisibleText(text)
        seen = visible.text
        found = [c for d in self.detectors for c in d.find(seen, names) if c.end > c.start]
        if self._allow:
            found = [c for c in found if not self._allow.allows(c.detector, seen[c.start : c.end])]
        return _merge_overlaps([Candidate(c.detector, *visible.span(c.start, c.end)) for c in found])


def _rank(candidate: Candidate) -> tuple[int, int]:
    length = candidate.end - candidate.start
    order = PRIORITY.index(candidate.detector) if candidate.detector in PRIORITY else len(PRIORITY)
    return (-length, order)


def _merge_overlaps(found: list[Candidate]) -> list[Candidate]:
    merged: list[Candidate] = []
    cluster: list[Candidate] = []
    cluster_end = -1
    for candidate in sorted(found, key=lambda c: (c.start, -c.end)):
        if cluster and candidate.start < cluster_end:
            cluster.append(candidate)
            cluster_end = max(cluster_end, candidate.end)
            continue
        if cluster:
            merged.append(_resolve(cluster, cluster_end))
        cluster, cluster_end = [candidate], candidate.end
    if cluster:
        merged.append(_resolve(cluster, cluster_end))
    return merged


def _resolve(cluster: list[Candidate], end: int) -> Candidate:
    winner = min(cluster, key=_rank)
    return Candidate(winner.detector, cluster[0].start, end)
