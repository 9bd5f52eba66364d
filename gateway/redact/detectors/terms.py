"""Words and names in any inflected form: "Nováková" is also "Novákové", "Müller" is
also "Müllers", "massage" is also "Massagen".

A full morphological analyser would be precise but heavy; hotel notifications use a
handful of endings, so a term matches as itself or as its stem plus one short ending
(Czech cases, German genitive/plural, English possessive), case- and accent-insensitively
and only on word boundaries.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

from gateway.redact.detectors.base import Candidate
from gateway.redact.names import PARTICLES, name_parts

_VOWELS = set("aeiouyáéíóúýěůäöüàâèêëîïôûœ")
_ENDINGS = sorted(
    {
        # Czech declension (nouns, -ová surnames, vocative)
        "a", "e", "é", "ě", "i", "í", "u", "ů", "y", "ý", "o", "ou", "em", "ovi", "ové",
        "ově", "ům", "ech", "ách", "ami", "ovou", "ích", "ím", "ými",
        # Czech adjectival surnames and soft-declension first names (Černého, Jiřímu)
        "ého", "ému", "ém", "ým", "ího", "ímu",
        # German genitive and plural, English plural
        "s", "es", "n", "en", "ns", "er", "ern",
        # Polish and Slovak declension (Zielińskiej, Kowalskiego, Kováčovú, Piotrze)
        "ą", "ę", "ej", "iej", "ie", "ego", "iego", "emu", "iemu", "owi", "om", "ów", "ú",
        "ze", "cie",
        # English possessive
        "'s", "’s", "s'", "s’",
    },
    key=len,
    reverse=True,
)
_ENDING = "(?:" + "|".join(re.escape(e) for e in _ENDINGS) + ")"
_MIN_STEM = 3


def _base(char: str) -> str:
    """The letter without its accent: 'á' -> 'a'."""
    decomposed = unicodedata.normalize("NFD", char)
    return decomposed[0] if decomposed else char


def _accent_classes() -> dict[str, str]:
    """For each base letter, a character class with its accented Latin variants."""
    variants: dict[str, set[str]] = {}
    for code in list(range(0xC0, 0x250)):
        char = chr(code)
        if not char.isalpha():
            continue
        base = _base(char).lower()
        if base.isascii() and base != char.lower():
            variants.setdefault(base, {base}).add(char.lower())
    return {base: "[" + "".join(sorted(chars)) + "]" for base, chars in variants.items()}


_ACCENTS = _accent_classes()


def _loose(text: str) -> str:
    """Pattern for `text` that ignores accents (used with re.IGNORECASE)."""
    parts = []
    for char in text:
        base = _base(char).lower()
        parts.append(_ACCENTS.get(base, re.escape(char)) if char.isalpha() else re.escape(char))
    return "".join(parts)


def _stems(word: str) -> list[str]:
    """Shortened forms that take an ending: final vowel dropped, Czech mobile 'e' dropped."""
    stems = []
    lower = word.lower()
    if lower[-1:] in _VOWELS and len(word) - 1 >= _MIN_STEM:
        stems.append(word[:-1])
    if re.search(r"[eě][kclnr]$", lower) and len(word) - 1 >= _MIN_STEM + 1:
        stems.append(word[:-2] + word[-1])  # Marek -> Marka, Pavel -> Pavla, Němec -> Němce
    return stems


def word_pattern(word: str) -> str:
    """Regex (no boundaries) for one word in any of its inflected forms."""
    forms = [f"{_loose(word)}{_ENDING}?"]
    forms += [f"{_loose(stem)}{_ENDING}" for stem in _stems(word)]
    return "(?:" + "|".join(forms) + ")"


def phrase_pattern(phrase: str) -> str:
    """Regex for a phrase, every word inflected, words separated by spaces or hyphens."""
    words = phrase.split()
    return r"[\s\-]+".join(word_pattern(w) for w in words)


def compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One boundary-anchored pattern for many terms (longest first), or None if empty."""
    unique = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    if not unique:
        return None
    body = "|".join(phrase_pattern(t) for t in unique)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


class TermDetector:
    """Finds fixed terms (treatments, deny-listed words) in any inflected form."""

    def __init__(self, name: str, terms: Iterable[str]) -> None:
        self.name = name
        self._pattern = compile_terms(terms)

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        if self._pattern is None:
            return
        for match in self._pattern.finditer(text):
            yield Candidate(self.name, match.start(), match.end())


@lru_cache(maxsize=256)
def _name_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    return compile_terms(tokens)


# Name parts separated only by a space or two (or a hyphen) are one name.
_JOINER = re.compile(r"^(?:[ \t\u00a0]{1,2}|-)$")


def _starts_with_particle(value: str) -> bool:
    """'de la Cruz' is written in lower case: a known multi-word surname may start so."""
    first, _, rest = value.partition(" ")
    return bool(rest) and first.lower() in PARTICLES


class NameDetector:
    """Finds the message's known guest names, each part on its own, in any inflected form.

    Adjacent parts ("Jana Nováková") are reported as one span. A match must start with a
    capital letter, as names are written: a guest called Hope or Rose does not make
    every "we hope" or "rosé" a name.
    """

    name = "name"

    def find(self, text: str, names: Sequence[str]) -> Iterator[Candidate]:
        tokens = name_parts(names)
        if not tokens:
            return
        pattern = _name_pattern(tokens)
        if pattern is None:
            return
        current: tuple[int, int] | None = None
        for match in pattern.finditer(text):
            if not text[match.start()].isupper() and not _starts_with_particle(match.group()):
                continue
            if current and _JOINER.match(text[current[1] : match.start()]):
                current = (current[0], match.end())
                continue
            if current:
                yield Candidate(self.name, *current)
            current = (match.start(), match.end())
        if current:
            yield Candidate(self.name, *current)

