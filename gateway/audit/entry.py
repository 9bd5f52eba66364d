"""One audit record before it joins the chain: what the writer batches and the spool keeps.

Plain values only, so an entry crosses the queue, the spool file and a process restart
unchanged. Personal fields are still in clear here; `AuditStore` encrypts them when the
entry is appended to the chain.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AuditEntry:
    request_id: str
    at: float  # wall-clock seconds since the epoch when the request arrived
    decision: str
    channel: str = "http"  # http | admin | outbound
    user: str | None = None
    session_hash: str | None = None
    device_id: str | None = None
    client_ip: str | None = None
    method: str | None = None
    path: str | None = None
    query: str | None = None  # raw until prepared, then scrubbed
    status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    upstream_ms: float | None = None
    reason: str | None = None
    identifiers: dict[str, str] = field(default_factory=dict)
    country: str | None = None
    city: str | None = None
    asn: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    prepared: bool = False  # scrubbed and enriched: safe to write anywhere

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> AuditEntry:
        return cls(**json.loads(line))


def admin_entry(
    action: str,
    *,
    operator: str | None = None,
    reason: str | None = None,
    identifiers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditEntry:
    """A record of something done to the trail or the login state rather than a request
    (purge, erasure, forgetting a known IP): `decision` names the action."""
    return AuditEntry(
        request_id="admin-" + secrets.token_hex(8),
        at=time.time(),
        decision=action,
        channel="admin",
        user=operator,
        reason=reason,
        identifiers=identifiers or {},
        extra=extra or {},
        prepared=True,
    )
