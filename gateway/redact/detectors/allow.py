"""Values the policy allows to leave: the hotel's own phone number, its e-mail domain.

Without this, every confirmation would lose the line "call us on +44 20 7946 0958".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers


def _normal(value: str) -> str:
    return re.sub(r"[^0-9a-z@+]", "", value.lower())


class AllowList:
    """Exact values (compared without spacing or punctuation) and `@domain` entries."""

    def __init__(self, entries: Iterable[str], region: str) -> None:
        self._region = region
        self._domains = tuple(e.lower() for e in entries if e.startswith("@"))
        self._values = {self._key(e) for e in entries if not e.startswith("@")}

    def __bool__(self) -> bool:
        return bool(self._domains or self._values)

    def allows(self, detector: str, value: str) -> bool:
        if detector == "email" and value.lower().endswith(self._domains):
            return True
        return self._key(value) in self._values

    def _key(self, value: str) -> str:
        """Phones compare in E.164 form, so '020 7946 0958' equals '+44 20 7946 0958'."""
        if sum(c.isdigit() for c in value) >= 5 and "@" not in value:
            try:
                number = phonenumbers.parse(value, self._region)
            except phonenumbers.NumberParseException:
                return _normal(value)
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return _normal(value)
