"""Outbound notifications (SMTP relay, egress proxy) in the same audit trail as requests.

The relay hands each `OutboundRecord` (channel, next hop, detector counts, action) to an
`OutboundAudit` sink; this one turns it into a chained record with channel "outbound".
"""

from __future__ import annotations

import secrets
import time

from gateway.audit.entry import AuditEntry
from gateway.audit.writer import RecordQueue
from gateway.redact.outbound_audit import OutboundRecord


class OutboundAuditSink:
    def __init__(self, writer: RecordQueue) -> None:
        self.writer = writer

    async def __call__(self, record: OutboundRecord) -> None:
        extra: dict[str, object] = {"detectors": dict(record.detectors)}
        if record.message_id:
            extra["message_id"] = record.message_id
        await self.writer.put(
            AuditEntry(
                # Unique per record: a deferred message retried later is a second record.
                request_id="out-" + secrets.token_hex(8),
                at=time.time(),
                decision=record.action,
                channel="outbound",
                method=record.channel,
                path=record.destination,
                bytes_out=record.bytes,
                reason=record.reason,
                extra=extra,
                prepared=True,
            )
        )
