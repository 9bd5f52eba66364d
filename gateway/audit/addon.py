"""The proxy's view of the audit trail: one record per request, refusal when it cannot.

`done` copies the exchange into an entry and queues it (no parsing, no I/O). `request`
answers 503 while the policy says records must not pile up (`on_queue_full: refuse` and
the queue is full) or must not be spooled (`on_store_failure: refuse` and the database is
away), and always when nothing at all can store records. With `durability: strict` the
record is stored (database or fsync'd spool, group-committed) before the answer goes out:
in the response phase for relayed answers, in `done` for the gateway's own answers (which
aiohttp sends only after the handler, and so the done hooks, returned).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from aiohttp import web

from gateway.audit.capture import entry_from_exchange
from gateway.audit.writer import AuditUnavailable, RecordQueue
from gateway.policy.schema import Policy
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.server import RESERVED_PREFIX

log = structlog.get_logger("gateway.audit")

_COMMITTED = "audit.committed"
UNAUDITED = (RESERVED_PREFIX + "health", RESERVED_PREFIX + "static/")


class Companion(Protocol):
    """Background work living as long as the writer (head export, retention)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AuditAddon(Addon):
    """`exporter` (the head export) starts after the writer and stops after it, so the
    final head is exported; `background` tasks (retention) stop before the writer drains."""

    def __init__(
        self,
        writer: RecordQueue,
        policy: Callable[[], Policy],
        exporter: Companion | None = None,
        background: Sequence[Companion] = (),
    ) -> None:
        self.writer = writer
        self.policy = policy
        self.exporter = exporter
        self.background = list(background)

    async def startup(self) -> None:
        await self.writer.start()
        if self.exporter is not None:
            await self.exporter.start()
        for task in self.background:
            await task.start()

    async def shutdown(self) -> None:
        # Runs after the server stopped taking requests and in-flight ones finished.
        for task in reversed(self.background):
            await task.close()
        await self.writer.close()
        if self.exporter is not None:
            await self.exporter.close()

    def refusing(self) -> str | None:
        """Why new requests must be refused now, or None."""
        audit = self.policy().audit
        if self.writer.stuck:
            return "audit trail unavailable"
        if audit.on_queue_full == "refuse" and self.writer.full:
            return "audit queue full"
        if audit.on_store_failure == "refuse" and self.writer.store_failing:
            return "audit database unavailable"
        return None

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        reason = self.refusing()
        if reason is None:
            return None
        ex.deny("refused", reason)
        response = error_response(ex.request, 503, ex.request_id, self.policy().property)
        response.headers["Retry-After"] = "5"
        return response

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        """`durability: strict`: store the record before the upstream's body is relayed.

        This addon runs last, so its response hook sees the answer exactly as it will be
        sent: status known, size from Content-Length (a streamed body of unknown length is
        recorded as such). If the record cannot be stored anywhere the answer is withheld.
        """
        if self.policy().audit.durability != "strict":
            return None
        entry = entry_from_exchange(ex)
        entry.status = answer.status
        length = answer.headers.get("Content-Length")
        if ex.request.method == "HEAD" or answer.status in (204, 304):
            entry.bytes_out = 0
        elif length is not None and length.isdigit():
            entry.bytes_out = int(length)
        else:
            entry.extra["bytes_out"] = "streamed"
        ex.notes[_COMMITTED] = True
        try:
            await self.writer.put_durable(entry)
        except AuditUnavailable:
            # The entry stays queued (never lost); it records what is now answered.
            ex.deny("refused", "audit trail unavailable")
            entry.status, entry.decision, entry.reason = 503, ex.decision, ex.reason
            return error_response(ex.request, 503, ex.request_id, self.policy().property)
        return None

    async def done(self, ex: Exchange) -> None:
        if ex.notes.get(_COMMITTED):
            return
        if ex.decision == "gateway" and ex.path.path.startswith(UNAUDITED):
            return  # health probes and static assets: noise, not activity
        entry = entry_from_exchange(ex)
        audit = self.policy().audit
        if audit.durability == "strict" and ex.decision != "refused":
            # The gateway's own answers are sent after this hook returns: store first.
            try:
                await self.writer.put_durable(entry)
            except AuditUnavailable:
                log.error("audit record not yet stored; kept queued", request_id=ex.request_id)
            return
        if self.writer.offer(entry):
            return
        if audit.on_queue_full == "wait":
            await self.writer.put(entry)
        else:
            self.writer.force(entry)  # this request was answered: keep its record
