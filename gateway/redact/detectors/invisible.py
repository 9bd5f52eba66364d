"""Text as a reader sees it: characters that render as nothing are taken out before detection.

A zero-width space, a word joiner, a byte-order mark or a soft hyphen inside a card number
("4111\u200b1111...") hides it from a pattern while a mail client shows the digits side
by side. Detectors therefore run on the text without these characters, and their spans
are mapped back onto the original text, so the redaction also removes the invisible
characters inside a value.
"""

from __future__ import annotations

import re

INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
"""Zero-width space, non-joiner, joiner, word joiner, BOM (zero-width no-break space), soft hyphen."""

_INVISIBLE = re.compile(f"[{INVISIBLE}]")


class VisibleText:
    """`text` without invisible characters, with the way back to the original positions."""

    def __init__(self, text: str) -> None:
        self.original = text
        if _INVISIBLE.search(text) is None:
            self.text = text
            self._origin: list[int] | None = None
            return
        kept = [i for i, char in enumerate(text) if char not in INVISIBLE]
        self.text = "".join(text[i] for i in kept)
        self._origin = kept

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of `self.text[start:end]` (a non-empty span)."""
        if self._origin is None:
            return start, end
        return self._origin[start], self._origin[end - 1] + 1
