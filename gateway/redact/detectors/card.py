"""Payment card numbers: digit groups that pass Luhn and start with a known issuer prefix.

Precision comes from the checksum, the issuer table with each network's lengths, and
the grouping (booking references of 13-19 digits fail one or the other); recall from trying every group-aligned sub-run, so a card
written next to other digits ("... 1111 2 nights") is still found.

Groups may be separated by a space, a dash or a dot, with a space either side
("4111 - 1111"), or by a line break (a wrapped line, a quoted-printable soft break once
decoded). A line break is a wrap, not a separator the writer chose, so it may fall
anywhere, even inside a group. Zero-width characters and soft hyphens never reach this
detector (`invisible.VisibleText`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from gateway.redact.detectors.base import Candidate

MIN_DIGITS = 13
MAX_DIGITS = 19

# Issuer identification number ranges (inclusive, compared on the leading digits) and
# the lengths each network issues. Lengths matter: a 14-digit French SIRET that passes
# Luhn and starts with 4 is not a Visa card.
_ANY = range(MIN_DIGITS, MAX_DIGITS + 1)
_IIN_RANGES: tuple[tuple[int, int, tuple[int, ...] | range], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, range(16, 20)),  # Discover
    (644, 649, range(16, 20)),
    (65, 65, range(16, 20)),
    (3528, 3589, range(16, 20)),  # JCB
    (300, 305, range(14, 20)),  # Diners Club
    (3095, 3095, range(14, 20)),
    (36, 36, range(14, 20)),
    (38, 39, range(14, 20)),
    (62, 62, range(16, 20)),  # UnionPay
    (81, 81, range(16, 20)),
    (50, 50, _ANY),  # Maestro
    (56, 69, _ANY),
    (2200, 2204, range(16, 20)),  # Mir
    (508, 508, (16,)),  # RuPay
    (82, 82, (16,)),
    (9792, 9792, (16,)),  # Troy
    (1, 1, (15,)),  # UATP
)

_SPACE = "[ \t\u00a0\u202f]"
# Between two digit groups: one space; a dash or dot with at most one space either side;
# or a line break with at most one space either side.
_SEPARATOR = (
    f"(?:{_SPACE}?[\\-.\u2010\u2011\u2012\u2013]{_SPACE}?|{_SPACE}?(?:\\r\\n|\\r|\\n){_SPACE}?|{_SPACE})"
)
_RUN = re.compile(f"(?<!\\d)\\d+(?:{_SEPARATOR}\\d+)*(?!\\d)")
_GROUP = re.compile(r"\d+")
_WRAP = re.compile(f"{_SPACE}?(?:\\r\\n|\\r|\\n){_SPACE}?")


def luhn_valid(digits: str) -> bool:
    """The mod-10 checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def known_issuer(digits: str) -> bool:
    """Whether a network issues numbers with this prefix and this length."""
    for low, high, lengths in _IIN_RANGES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


def is_card_number(digits: str) -> bool:
    """13-19 digits, Luhn-valid, with a known issuer prefix."""
    return (
        MIN_DIGITS <= len(digits) <= MAX_DIGITS
        and digits.isdigit()
        and luhn_valid(digits)
        and known_issuer(digits)
    )


class CardDetector:
    """Finds payment card numbers, spaced, dashed or unseparated."""

    name = "card"

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        for run in _RUN.finditer(text):
            groups = [(m.start() + run.start(), m.end() + run.start())
                      for m in _GROUP.finditer(run.group())]
            yield from self._in_groups(text, groups)

    def _in_groups(self, text: str, groups: list[tuple[int, int]]) -> Iterator[Candidate]:
        """Longest group-aligned card numbers in a run, left to right, not overlapping."""
        # wrapped[i]: groups i and i+1 are split by a line break, not by a chosen separator.
        wrapped = [_WRAP.fullmatch(text, a[1], b[0]) is not None for a, b in zip(groups, groups[1:])]
        first = 0
        while first < len(groups):
            found = None
            for last in range(len(groups) - 1, first - 1, -1):
                start, end = groups[first][0], groups[last][1]
                digits = "".join(text[a:b] for a, b in groups[first : last + 1])
                if len(digits) > MAX_DIGITS:
                    continue
                if len(digits) < MIN_DIGITS:
                    break
                # Every network prints a card starting with a group of four digits;
                # "552 100 554 00025" (a SIRET) is grouped otherwise.
                if not _leads_with_four(groups, wrapped, first, last):
                    continue
                if is_card_number(digits):
                    found = (last, start, end)
                    break
            if found is None:
                first += 1
                continue
            last, start, end = found
            yield Candidate(self.name, start, end)
            first = last + 1


def _leads_with_four(groups: list[tuple[int, int]], wrapped: list[bool], first: int, last: int) -> bool:
    """Whether groups first..last, read across line breaks, start with four digits before
    their first chosen separator (or have none: one unseparated number)."""
    count = 0
    for index in range(first, last + 1):
        count += groups[index][1] - groups[index][0]
        if index == last or not wrapped[index]:
            return index == last or count == 4
    return True
