"""Context words: a number or date is sensitive only when the sentence says what it is.

"Passport 123456789" is a passport number; "Room 412. Please bring your passport." is
not followed by one. A context word counts when it precedes the value within a window
and no sentence boundary lies between them (abbreviations such as "No." excepted).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def _fold_table() -> dict[int, str]:
    table = {}
    for code in range(0xC0, 0x250):
        base = unicodedata.normalize("NFD", chr(code))[0]
        if base.isascii() and base != chr(code):
            table[code] = base
    table[ord("\u2019")] = "'"
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """Accents removed character for character, so offsets stay valid.

    SMS often arrive without diacritics ("narozeni" for "narození"); context words and
    month names are compared on folded text.
    """
    return text.translate(_FOLD)

_ABBREVIATIONS = re.compile(r"(?i)(?<!\w)(?:no|nr|n°|num|č|čís|št|geb|nar|dob|d\.o\.b)\.")
# A line break ends the context too: in "Passport: 123\nMobile: 604 756 578" the word
# "Passport" says nothing about the mobile number.
_SENTENCE_BREAK = re.compile(r"[.!?;\n]")


def _word_pattern(word: str) -> str:
    """Whole-word pattern; short all-capital words (ID, OP, DOB) match only as written."""
    escaped = re.escape(word)
    left = r"(?<!\w)" if word[:1].isalnum() else ""
    right = r"(?!\w)" if word[-1:].isalnum() else ""
    if len(word) <= 3 and word.isupper():
        return f"(?-i:{left}{escaped}{right})"
    return f"{left}{escaped}{right}"


class ContextWords:
    """A set of context words and the distance within which they must precede a value.

    Both methods take text already passed through `fold`.
    """

    def __init__(self, words: Iterable[str], window: int) -> None:
        ordered = sorted({fold(w.strip()) for w in words if w.strip()}, key=len, reverse=True)
        self.window = window
        # Words with letters at both ends share one pair of boundary assertions (much
        # faster than one pair per alternative); the rest carry their own.
        plain = [w for w in ordered if w[0].isalnum() and w[-1].isalnum()
                 and not (len(w) <= 3 and w.isupper())]
        alternatives = [_word_pattern(w) for w in ordered if w not in plain]
        if plain:
            alternatives.insert(0, r"(?<!\w)(?:" + "|".join(map(re.escape, plain)) + r")(?!\w)")
        self._pattern = re.compile("(?i)" + "|".join(alternatives)) if alternatives else None

    def any_in(self, text: str) -> bool:
        """Cheap pre-check: does the text mention any context word at all?"""
        return self._pattern is not None and self._pattern.search(text) is not None

    def precedes(self, text: str, start: int) -> bool:
        """Whether a context word stands before `start`, in the same sentence."""
        if self._pattern is None:
            return False
        low = max(0, start - self.window)
        for match in self._pattern.finditer(text, low, start):
            gap = _ABBREVIATIONS.sub("", text[match.end() : start])
            if not _SENTENCE_BREAK.search(gap):
                return True
        return False
