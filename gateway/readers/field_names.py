"""How a field name is folded before it is compared: one spelling for every reader.

Its own module (no web imports) so the audit writer process can fold query parameter
names exactly as the credential reader does without loading the proxy.
"""

from __future__ import annotations

import unicodedata


def canonical_name(name: str) -> str:
    """A field name as the most lenient reader could take it: NFKC, no white space or
    control characters anywhere, case-folded. Over-matching only refuses a request."""
    if name.isascii() and name.isprintable():
        return "".join(name.split()).lower()
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf"))
    return text.casefold()
