"""E-mail addresses and phone numbers: how a guest can be reached.

Phones are found by libphonenumber's matcher (which already refuses dates, times and
most references) and must be valid numbers for their country. A number labelled as a
reference ("booking ref 724193856") is not a phone even when it would dial somewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import phonenumbers

from phonenumbers.phonenumbermatcher import (  # the matcher's own check, reused
    _is_national_prefix_present_if_required as _trunk_prefix_present_if_required,
)

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
    r"no|nr|n°|#|storno|zweck|"
    r"(?:buchung|rechnung|reservierung|bestellung|quittung|beleg|auftrag|bestätigung|"
    r"verwendungszweck|rezervac|objednáv|faktur|factur|invoice|booking|reservation|"
    r"confirmation|order|commande|prenotazion|reserva|reservering|rezerwacj|zamówieni|"
    r"ticket|voucher|receipt|quittance|ricevuta|recibo)\w*)"
    r"(?:\s+(?:number|no|nr|nummer|numéro|číslo|č|n\.|núm\.?))?(?:\s+[A-Z]{2})?\W{0,12}$"
)
_PHONE_WORDS = re.compile(
    r"(?i)(?<!\w)(?:"
    # English
    r"tel|tele|phone|telephone|mobile|mob|cell|cellphone|call|calls|ring|text|sms|whatsapp|"
    r"fax|contact|reach|dial|"
    # French
    r"tél|téléphone|telephone|portable|appelez|appeler|appelez-nous|joignable|joindre|"
    # German
    r"telefon|telefonnummer|handy|handynummer|mobil|mobilnummer|rufnummer|rückruf|"
    r"rückrufnummer|anrufen|erreichbar|festnetz|kontakt|"
    # Czech, Slovak
    r"telefonu|telefonní|telefón|telefónne|volejte|zavolejte|volajte|zavolajte|mobilu|"
    # Italian, Spanish, Portuguese
    r"telefono|cellulare|cell|chiami|chiamare|chiamaci|contattare|"
    r"teléfono|móvil|movil|llame|llámanos|llamanos|llamar|contacto|telemóvel|telefone|ligue|"
    # Dutch, Polish, Nordic, Hungarian, Finnish
    r"bel|bellen|telefoon|telefoonnummer|mobiel|mobiele|dzwonić|dzwonic|zadzwoń|zadzwon|"
    r"komórka|komorka|komórkowy|ring|puhelin|soita"
    r")(?!\w)"
)
_LOOKBEHIND = 24
_CONTEXT_WINDOW = 40
_MIN_DIGITS = 7  # shorter "numbers" that parse as valid (service codes) are prices, times
_MAX_DIGITS = 15  # E.164
_DATE_SHAPED = re.compile(r"^\d{1,2}[./-]\d{1,2}[./-](?:\d{2}|\d{4})$|^\d{4}-\d{1,2}-\d{1,2}$")
# A run of digits in the groupings phone numbers are written in: an optional +CC (or
# 00CC) prefix, an optional bracketed area code, groups joined by one space (also a
# no-break space), a hyphen, a dot or a slash.
_CANDIDATE = re.compile(
    r"(?<![\w+/.,-])(?:\+|00(?=[1-9]))?(?:\(\d{1,5}\)[ \u00a0\u202f]?|\d)"
    r"(?:[ \u00a0\u202f./-]?(?:\(\d{1,5}\)|\d))*(?![\w/-]|[.,:]\d)"
)
_SENTENCE_END = re.compile(r"[!?;\n]|(?<!\btel)(?<!\btél)(?<!\bmob)(?<!\bno)(?<!\bnr)\.\s")


def _inside_number(text: str, start: int) -> bool:
    """'727/037/65241': a match that starts inside a longer slash- or dot-joined number."""
    return start >= 2 and text[start - 1] in "/." and text[start - 2].isdigit()


class PhoneDetector:
    """Finds phone numbers as guests and hotels write them.

    - International (`+44 7700 900456`, `0049 176 ...`): when possible for its country
      (fictional and new ranges are not "valid", but they are somebody's number).
    - National (`0612345678`, `602 123 456`): when valid in `region` (the hotel's
      country), or possible in one of `regions` (the guests' countries) and either
      written after a phone word (call, Telefon, volejte, móvil...) or written as
      phone numbers are (a leading trunk 0 or a bracketed area code, in groups) and
      valid in one of them.
    A number labelled as a reference ("booking ref 724193856") is never a phone, nor is
    a date or a run of digits inside a longer one.
    """

    name = "phone"

    def __init__(self, region: str, regions: Sequence[str] = ()) -> None:
        self.region = region
        self.regions = tuple(dict.fromkeys([region, *regions]))

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        if sum(char.isdigit() for char in text) < _MIN_DIGITS:
            return
        for match in _CANDIDATE.finditer(text):
            raw = match.group().rstrip(" \u00a0\u202f./-")
            digits = sum(c.isdigit() for c in raw)
            if not _MIN_DIGITS <= digits <= _MAX_DIGITS + 2 or _DATE_SHAPED.match(raw) \
                    or _CONTAINS_DATE.search(raw):
                continue
            start = match.start()
            if self._labelled_as_reference(text, start) or _inside_number(text, start):
                continue
            if self._is_phone(raw, text, start):
                yield Candidate(self.name, start, start + len(raw))

    def _is_phone(self, raw: str, text: str, start: int) -> bool:
        if raw.startswith(("+", "00")):
            number = _parse("+" + raw[2:] if raw.startswith("00") else raw, None)
            return number is not None and phonenumbers.is_possible_number(number)
        if digits_only(raw) > 12:
            return False
        home = _parse(raw, self.region)
        if home is not None and phonenumbers.is_valid_number(home):
            return True
        parsed = [(r, n) for r in self.regions if (n := _parse(raw, r)) is not None]
        # Where a country dials national numbers with a trunk prefix (0 in most of
        # Europe), a number written without it is a reference, not a phone.
        possible = [n for _, n in parsed if phonenumbers.is_possible_number(n)]
        if not possible:
            return False
        if _after_phone_word(text, start):
            return True
        shaped = raw.startswith("(") or (raw.startswith("0") and not raw.isdigit())
        return shaped and (
            any(phonenumbers.is_valid_number(n) for n in possible)
            or (home is not None and phonenumbers.is_possible_number(home))
        )

    @staticmethod
    def _labelled_as_reference(text: str, start: int) -> bool:
        before = text[max(0, start - _LOOKBEHIND) : start]
        if text[start : start + 1] == "+":
            return False  # an international prefix is never a reference number
        return bool(_REFERENCE_WORDS.search(before)) and not _PHONE_WORDS.search(before)


_CONTAINS_DATE = re.compile(
    r"(?<!\d)(?:0?[1-9]|[12]\d|3[01])[./](?:0?[1-9]|1[0-2])[./](?:\d{4}|\d{2})(?![.\d])"
)


def digits_only(raw: str) -> int:
    return sum(c.isdigit() for c in raw)


def _parse(raw: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """The number as read in `region`; None if it cannot be one there (unparsable, or a
    national number missing the trunk prefix the region writes: `2025809341` in DE)."""
    try:
        number = phonenumbers.parse(raw, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None
    if region is not None and not _trunk_prefix_present_if_required(number):
        return None
    return number


def _after_phone_word(text: str, start: int) -> bool:
    """Whether a phone word stands before `start` in the same sentence, nearby."""
    before = text[max(0, start - _CONTEXT_WINDOW) : start]
    last = None
    for last in _PHONE_WORDS.finditer(before):
        pass
    return last is not None and not _SENTENCE_END.search(before[last.end() :])
