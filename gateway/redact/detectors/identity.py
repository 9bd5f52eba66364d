"""Passport/ID numbers and dates of birth: ordinary-looking values made sensitive by
their context word (numbers and dates are everywhere in booking notifications)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date

from gateway.redact.detectors.base import Candidate
from gateway.redact.detectors.context import ContextWords, fold
from gateway.redact.policy import IdPattern


class PassportDetector:
    """Finds passport and identity-card numbers by country pattern plus context word."""

    name = "passport"

    def __init__(self, patterns: Mapping[str, IdPattern], window: int) -> None:
        # Countries usually share the default context words: one ContextWords per set,
        # and one pattern for all the countries that share it.
        grouped: dict[tuple[str, ...], list[str]] = {}
        for rule in patterns.values():
            grouped.setdefault(tuple(sorted(rule.context)), []).append(rule.pattern)
        self._rules = [
            (
                re.compile(
                    r"(?<![A-Za-z0-9])(?:" + "|".join(f"(?:{p})" for p in pats) + r")(?![A-Za-z0-9])"
                ),
                ContextWords(context, window),
            )
            for context, pats in grouped.items()
        ]

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        folded = fold(text)
        for pattern, context in self._rules:
            if not context.any_in(folded):
                continue
            for match in pattern.finditer(text):
                if context.precedes(folded, match.start()):
                    yield Candidate(self.name, match.start(), match.end())


_MONTHS = (
    # English
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    # French
    "janvier février fevrier mars avril mai juin juillet août aout septembre octobre "
    "novembre décembre decembre janv févr avr juil déc "
    # German
    "januar jänner februar märz maerz april mai juni juli august september oktober "
    "november dezember "
    # Czech (genitive, as used in dates) and nominative
    "ledna února března dubna května června července srpna září října listopadu prosince "
    "leden únor březen duben květen červen červenec srpen říjen listopad prosinec "
    # Italian, Spanish, Dutch, Polish (genitive), Slovak (genitive)
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre enero febrero marzo abril mayo junio julio agosto septiembre setiembre "
    "octubre noviembre diciembre januari februari maart april mei juni juli augustus "
    "september oktober november december stycznia lutego marca kwietnia maja czerwca "
    "lipca sierpnia września października listopada grudnia januára februára marca "
    "apríla mája júna júla augusta septembra októbra novembra decembra"
).split()
_MONTH = "(?:" + "|".join(sorted({re.escape(fold(m)) for m in _MONTHS}, key=len, reverse=True)) + r")\.?"
_DAY = r"(?:[0-3]?\d)(?:st|nd|rd|th|er)?\.?"
_YEAR = r"(?:1[89]\d\d|20\d\d)"

_DATE = re.compile(
    r"(?i)(?<![\w/.-])(?:"
    rf"{_YEAR}-[01]?\d-[0-3]?\d"  # 1985-03-12
    rf"|[0-3]?\d\s?[./-]\s?[01]?\d\s?[./-]\s?(?:{_YEAR}|\d\d)"  # 12.03.1985, 12/3/85
    rf"|{_DAY}\s+(?:de\s+)?{_MONTH}\s+(?:de\s+)?{_YEAR}"  # 12 March 1985, 1er mars 1985, 3 de mayo de 1990
    rf"|{_MONTH}\s+{_DAY},?\s+{_YEAR}"  # March 12, 1985
    r")(?![\w/])"
)


class DateOfBirthDetector:
    """Finds dates written after a birth context word (born, DOB, né le, geboren, ...)."""

    name = "date_of_birth"

    def __init__(self, context: Sequence[str], window: int) -> None:
        self._context = ContextWords(context, window)

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        folded = fold(text)  # month names and context words, with or without accents
        if not self._context.any_in(folded):
            return
        for match in _DATE.finditer(folded):
            if self._plausible(match.group()) and self._context.precedes(folded, match.start()):
                yield Candidate(self.name, match.start(), match.end())

    @staticmethod
    def _plausible(value: str) -> bool:
        """A birth year is not in the future (two-digit years are accepted)."""
        years = re.findall(r"\d{4}", value)
        return not years or int(years[-1]) <= date.today().year
