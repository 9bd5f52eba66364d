"""Field paths in a channel rule: `Body`, `message.text`, `to[].name`.

Paths name a key in a form or multipart body, or a dotted path into JSON where `[]`
means "every element of this list" (and may be left out: `to.name` is the same path).
A path also covers everything below it: `message` selects `message.text` and
`message.subject`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_INDEX = re.compile(r"\[\d*\]")


def normalise(path: str) -> str:
    """'to[0].name', 'to[].name' and 'to.name' all become 'to.name'."""
    return _INDEX.sub("", path).strip(".")


class FieldSelector:
    """Which fields a channel redacts, which hold the recipient, which hold names."""

    def __init__(self, fields: Sequence[str], recipient: str | None,
                 name_fields: Sequence[str]) -> None:
        self._fields = tuple(normalise(f) for f in fields)
        self._recipient = normalise(recipient) if recipient else None
        self._names = tuple(normalise(f) for f in name_fields)

    @staticmethod
    def _covers(patterns: Sequence[str], path: str) -> bool:
        return any(path == p or path.startswith(p + ".") for p in patterns)

    def is_recipient(self, path: str) -> bool:
        return self._recipient is not None and self._covers((self._recipient,), normalise(path))

    def redacts(self, path: str) -> bool:
        """Selected for redaction: listed (or nothing listed), and not the recipient."""
        if self.is_recipient(path):
            return False
        return not self._fields or self._covers(self._fields, normalise(path))

    def holds_name(self, path: str) -> bool:
        return self._covers(self._names, normalise(path))
