"""E-mail addresses and phone numbers: how a guest can be reached.

Phones are found by libphonenumber's matcher (which already refuses dates, times and
most references) and must be valid numbers for their country. A number labelled as a
reference ("booking ref 724193856") is not a phone even when it would dial somewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import phonenumbers

from gateway.redact.detectors.base import Candidate

_EMAIL = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


class EmailDetector:
    """Finds e-mail addresses (ASCII local part and domain)."""

    name = "email"

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        if "@" not in text:
            return
        for match in _EMAIL.finditer(text):
            yield Candidate(self.name, match.start(), match.end())


# A number right after one of these words is a reference, not a phone, unless a phone
# word is nearer.
_REFERENCE_WORDS = re.compile(
    r"(?i)(?<!\w)(?:ref|reference|référence|réf|booking|reservation|réservation|"
    r"confirmation|order|commande|invoice|facture|rechnung|buchung|buchungsnummer|"
    r"bestellung|auftrag|reservierung|objednávka|objednávky|faktura|faktury|rezervace|"
    r"rezervaci|voucher|code|kód|ticket|payment|paiement|zahlung|platba|platby|"
    r"steuernr|steuernummer|hrb|ust-idnr|ičo|ico|dič|dic|siret|siren|tva|vat|"
    r"no|nr|n°|#)"
    r"(?:\s+(?:number|no|nr|nummer|numéro|číslo|č))?\W{0,12}$"
)
_PHONE_WORDS = re.compile(
    r"(?i)(?<!\w)(?:tel|tél|phone|telephone|téléphone|mobile|mobil|portable|call|"
    r"sms|whatsapp|telefon|telefonu|telefonní|telefonnummer|handy|fax|volejte|zavolejte|appelez|anrufen|"
    r"rufen|kontakt|contact)(?!\w)"
)
_LOOKBEHIND = 24
_MIN_DIGITS = 7  # shorter "numbers" that parse as valid (service codes) are prices, times
_DATE_SHAPED = re.compile(r"^\d{1,2}[./]\d{1,2}[./](?:\d{2}|\d{4})$")


def _inside_number(text: str, start: int) -> bool:
    """'727/037/65241': a match that starts inside a longer slash- or dot-joined number."""
    return start >= 2 and text[start - 1] in "/." and text[start - 2].isdigit()


class PhoneDetector:
    """Finds valid phone numbers, national ones for `region` and international ones."""

    name = "phone"

    def __init__(self, region: str) -> None:
        self.region = region

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        if sum(char.isdigit() for char in text) < 5:
            return
        matcher = phonenumbers.PhoneNumberMatcher(
            text, self.region, leniency=phonenumbers.Leniency.VALID
        )
        for match in matcher:
            raw = match.raw_string
            if sum(c.isdigit() for c in raw) < _MIN_DIGITS or _DATE_SHAPED.match(raw):
                continue
            if self._labelled_as_reference(text, match.start) or _inside_number(text, match.start):
                continue
            yield Candidate(self.name, match.start, match.end)

    @staticmethod
    def _labelled_as_reference(text: str, start: int) -> bool:
        before = text[max(0, start - _LOOKBEHIND) : start]
        if text[start : start + 1] == "+":
            return False  # an international prefix is never a reference number
        return bool(_REFERENCE_WORDS.search(before)) and not _PHONE_WORDS.search(before)
