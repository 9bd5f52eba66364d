"""The hash chain: what a record's MAC covers and how records link.

Each instance appends to its own chain: record n carries `seq = n`, `prev_mac` (the MAC of
record n-1, or the instance's genesis value) and `mac = HMAC(key, prev_mac || canonical
encoding of every stored field)`. Editing a field, deleting or reordering rows breaks a
MAC or a link; recomputing the chain needs the key. The canonical encoding is computed
from the values *as stored* (personal fields as ciphertext), so verification never needs
the subject keys and erasure never breaks it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CHAINED_FIELDS: tuple[str, ...] = (
    "instance_id", "seq", "at", "request_id", "user_name", "session_hash", "device_id",
    "client_ip", "country", "city", "asn", "method", "path", "query", "status", "bytes_in",
    "bytes_out", "duration_ms", "upstream_ms", "decision", "reason", "identifiers", "channel",
    "extra", "subject", "tags",
)
"""Every column of audit_records except the surrogate id and the chain links themselves."""

_AT = CHAINED_FIELDS.index("at")
_FLOATS = tuple(CHAINED_FIELDS.index(name) for name in ("duration_ms", "upstream_ms"))
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def canonical(row: Mapping[str, Any]) -> bytes:
    """The encoding a record's MAC covers, from a stored row (or any mapping)."""
    return canonical_values([row.get(name) for name in CHAINED_FIELDS])


def canonical_values(values: list[Any]) -> bytes:
    """The JSON array of the chained fields in CHAINED_FIELDS order, one spelling per value
    whatever the backend returns: datetimes as UTC ISO with microseconds, floats with
    three decimals. `values` is not modified."""
    values = values.copy()
    at = values[_AT]
    if isinstance(at, datetime):
        values[_AT] = at.astimezone(UTC).isoformat(timespec="microseconds")
    for index in _FLOATS:
        if values[index] is not None:
            values[index] = f"{float(values[index]):.3f}"
    return _encode(values).encode()


def record_mac(key: bytes, prev_mac: str, row: Mapping[str, Any]) -> str:
    return values_mac(key, prev_mac, [row.get(name) for name in CHAINED_FIELDS])


def values_mac(key: bytes, prev_mac: str, values: list[Any]) -> str:
    """MAC of a record given as its chained values in CHAINED_FIELDS order."""
    return hmac.digest(key, prev_mac.encode() + b"\n" + canonical_values(values), "sha256").hex()


def genesis(key: bytes, instance_id: str) -> str:
    """The `prev_mac` of an instance's first record."""
    return hmac.digest(key, b"genesis\n" + instance_id.encode(), "sha256").hex()


def anchor_mac(key: bytes, instance_id: str, seq: int, prev_mac: str) -> str:
    """Seals a purge anchor: where a chain legitimately starts after retention."""
    message = json.dumps(["anchor", instance_id, seq, prev_mac], separators=(",", ":")).encode()
    return hmac.digest(key, message, "sha256").hex()


def macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
