"""From a finished exchange to an audit entry, in the `done` hook.

Two steps, split on purpose: `entry_from_exchange` runs in the `done` hook and only copies
attributes (no parsing, no I/O, so the request path stays cheap); `EntryPreparer`
(gateway.audit.prepare) runs in the writer before anything is persisted, and is where
secrets are removed. The request body, cookies and headers are
never read at all.
"""

from __future__ import annotations

import time

from gateway.audit.entry import AuditEntry
from gateway.proxy.exchange import Exchange
from gateway.sessions.model import device_label

AREA_NOTE = "area"
"""`Exchange.notes` key: the public area or API client a request was judged as (recorded in `extra`)."""


def entry_from_exchange(ex: Exchange) -> AuditEntry:
    upstream = ex.upstream_seconds
    return AuditEntry(
        request_id=ex.request_id,
        at=ex.wall_time,
        decision=ex.decision,
        user=ex.user,
        session_hash=ex.session_hash,
        device_id=device_label(ex.device_id),
        client_ip=ex.client_ip,
        method=ex.request.method,
        path=ex.path.path,
        query=ex.query or None,
        status=ex.status or None,
        bytes_in=ex.bytes_in,
        bytes_out=ex.bytes_out,
        duration_ms=(time.perf_counter() - ex.started) * 1000.0,
        upstream_ms=None if upstream is None else upstream * 1000.0,
        reason=ex.reason,
        extra={"area": area} if (area := ex.notes.get(AREA_NOTE)) is not None else {},
    )


