"""What replaces a finding: the policy's operators (keep, redact, mask, hash, drop, block).

Every replacement is built so that detectors cannot find anything in it again: labels
are bracketed words, masks keep only the last few characters, pseudonyms use letters
only. That is what makes redaction idempotent and the strict leftover scan meaningful.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.redact.policy import ActionSpec

MASK_CHAR = "*"
_PSEUDONYM_ALPHABET = "abcdefghjkmnpqrstuvwxyz"  # letters only: never a number again
_PSEUDONYM_LENGTH = 10


def label(detector: str) -> str:
    """The default replacement for `redact`: `[CARD]`, `[DATE_OF_BIRTH]`."""
    return f"[{detector.upper()}]"


def mask(value: str, keep_last: int) -> str:
    """Letters and digits masked except the last `keep_last`; separators kept.

    '4111 1111 1111 1111' -> '**** **** **** 1111' (the PCI display rule).
    """
    positions = [i for i, char in enumerate(value) if char.isalnum()]
    hidden = set(positions[: max(0, len(positions) - keep_last)])
    return "".join(MASK_CHAR if i in hidden else char for i, char in enumerate(value))


def pseudonym(key: bytes, detector: str, value: str) -> str:
    """A stable keyed pseudonym: the same guest value gives the same token, unguessably."""
    normal = "".join(c for c in value.casefold() if c.isalnum())
    digest = hmac.new(key, f"{detector}\0{normal}".encode(), hashlib.sha256).digest()
    base = len(_PSEUDONYM_ALPHABET)
    number = int.from_bytes(digest, "big")
    letters = []
    for _ in range(_PSEUDONYM_LENGTH):
        number, index = divmod(number, base)
        letters.append(_PSEUDONYM_ALPHABET[index])
    return "".join(letters)


class Operators:
    """Applies the policy's actions to detected values."""

    def __init__(self, actions: Mapping[str, ActionSpec], default: ActionSpec,
                 hash_key: bytes) -> None:
        uses_hash = default.operator == "hash" or any(
            a.operator == "hash" for a in actions.values()
        )
        if uses_hash and not hash_key:
            raise ValueError("the policy uses `hash` but no hash key is configured")
        self._actions = dict(actions)
        self._default = default
        self._key = hash_key

    def spec(self, detector: str) -> ActionSpec:
        return self._actions.get(detector, self._default)

    def replace(self, detector: str, value: str) -> str:
        """The text that takes the place of `value` in the output."""
        spec = self.spec(detector)
        match spec.operator:
            case "keep":
                return value
            case "mask":
                return mask(value, spec.keep_last)
            case "hash":
                return f"[{detector.upper()}:{pseudonym(self._key, detector, value)}]"
            case "drop":
                return ""
            case _:  # redact, and block (a blocked message still never carries the value)
                return spec.label or label(detector)
