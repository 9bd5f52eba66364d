"""The hash chain: what a record's MAC covers and how records link.

Each instance appends to its own chain: record n carries `seq = n`, `prev_mac` (the MAC of
record n-1, or the instance's genesis value) and `mac = HMAC(key, prev_mac || canonical
encoding of every stored field)`. Editing a field, deleting or reordering rows breaks a
MAC or a link; recomputing the chain needs the key. The canonical encoding is computed
from the values *as stored* (personal fields as ciphertext), so verification never needs
the subject keys and erasure never breaks it.
"""

from __future__ import annotations

import hashlib
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

_FLOATS = frozenset({"duration_ms", "upstream_ms"})


def _normalise(name: str, value: Any) -> Any:
    """One spelling per value whatever the backend returns (datetimes, float vs int)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if name in _FLOATS:
        return f"{float(value):.3f}"
    return value


def canonical(row: Mapping[str, Any]) -> bytes:
    values = [_normalise(name, row.get(name)) for name in CHAINED_FIELDS]
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode()


def record_mac(key: bytes, prev_mac: str, row: Mapping[str, Any]) -> str:
    mac = hmac.new(key, prev_mac.encode() + b"\n", hashlib.sha256)
    mac.update(canonical(row))
    return mac.hexdigest()


def genesis(key: bytes, instance_id: str) -> str:
    """The `prev_mac` of an instance's first record."""
    return hmac.new(key, b"genesis\n" + instance_id.encode(), hashlib.sha256).hexdigest()


def anchor_mac(key: bytes, instance_id: str, seq: int, prev_mac: str) -> str:
    """Seals a purge anchor: where a chain legitimately starts after retention."""
    message = json.dumps(["anchor", instance_id, seq, prev_mac], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
