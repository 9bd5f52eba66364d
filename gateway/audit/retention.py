"""Retention: purging records older than `audit.retention` without breaking verification.

For each chain, the oldest record kept becomes the new start: its position and the MAC it
links to are stored as an anchor, sealed with the audit key, before anything is deleted
(so a crash mid-purge leaves a verifiable trail, and nobody without the key can move the
anchor to hide deletions). Login history past retention, API tokens that ended before it
and known IPs past `known_ips.keep_for` go too. The purge itself is recorded in the
trail. The running gateway does this daily; `pms-gateway audit purge` does it on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, func, select

from gateway.access.api_tokens import purge_ended_tokens
from gateway.audit.chain import anchor_mac
from gateway.audit.entry import AuditEntry, admin_entry
from gateway.audit.keys import AuditKeys
from gateway.audit.sql import upsert
from gateway.audit.store import lock_head
from gateway.db import Database, audit_anchors, audit_chain_heads, audit_records, known_ips, login_history, utcnow
from gateway.policy.schema import Policy
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.audit.retention")

DELETE_CHUNK = 5000
DAY = 86400.0
FIRST_RUN_DELAY = 300.0  # let a (re)starting gateway settle first


@dataclass(slots=True)
class PurgeResult:
    cutoff: datetime
    records: int = 0
    login_history: int = 0
    known_ips: int = 0
    api_tokens: int = 0
    anchors: dict[str, int] = field(default_factory=dict)

    def entry(self, operator: str | None = None) -> AuditEntry:
        return admin_entry(
            "purge",
            operator=operator,
            reason=f"retention: records before {self.cutoff.isoformat(timespec='seconds')}",
            extra={"cutoff": self.cutoff.isoformat(), "records": self.records, "login_history": self.login_history,
                   "known_ips": self.known_ips, "api_tokens": self.api_tokens, "anchors": self.anchors},
        )


async def purge(database: Database, keys: AuditKeys, policy: Policy, now: datetime | None = None) -> PurgeResult:
    now = now or utcnow()
    result = PurgeResult(cutoff=now - timedelta(seconds=policy.audit.retention))
    async with database.connect() as conn:
        instances = list((await conn.execute(select(audit_chain_heads.c.instance_id))).scalars())
    for instance in instances:
        start = await _move_anchor(database, keys, instance, result)
        if start is not None:
            result.records += await _delete_before(database, instance, start)
    async with database.begin() as conn:
        result.login_history = (await conn.execute(delete(login_history).where(login_history.c.at < result.cutoff))).rowcount
        stale = now - timedelta(seconds=policy.known_ips.keep_for)
        result.known_ips = (await conn.execute(delete(known_ips).where(known_ips.c.last_seen < stale))).rowcount
        result.api_tokens = await purge_ended_tokens(conn, result.cutoff)
    return result


async def _move_anchor(database: Database, keys: AuditKeys, instance: str, result: PurgeResult) -> int | None:
    """Seal the new start of `instance`'s chain; returns it, or None if nothing expires."""
    c = audit_records.c
    async with database.begin() as conn:
        head_seq, head_mac = await lock_head(conn, instance, keys.chain)  # no append meanwhile
        first_kept = (
            await conn.execute(select(func.min(c.seq)).where(c.instance_id == instance, c.at >= result.cutoff))
        ).scalar()
        anchor = (await conn.execute(select(audit_anchors).where(audit_anchors.c.instance_id == instance))).first()
        current = int(anchor.seq) if anchor is not None else 1
        if first_kept is None:
            start, prev = head_seq + 1, head_mac  # everything expired: the next record anchors
        else:
            start = int(first_kept)
            prev = (await conn.execute(select(c.prev_mac).where(c.instance_id == instance, c.seq == start))).scalar_one()
        if start <= current:
            return None
        await conn.execute(
            upsert(conn.dialect.name, audit_anchors, ["instance_id"], ["seq", "prev_mac", "mac", "purged_before", "updated_at"]),
            [{"instance_id": instance, "seq": start, "prev_mac": prev, "mac": anchor_mac(keys.chain, instance, start, prev),
              "purged_before": result.cutoff, "updated_at": utcnow()}],
        )
    result.anchors[instance] = start
    return start


async def _delete_before(database: Database, instance: str, start: int) -> int:
    """Delete in short transactions: verification ignores records before the anchor."""
    c = audit_records.c
    deleted = 0
    while True:
        async with database.begin() as conn:
            low = (await conn.execute(select(func.min(c.seq)).where(c.instance_id == instance, c.seq < start))).scalar()
            if low is None:
                return deleted
            upper = min(int(low) + DELETE_CHUNK, start)
            deleted += (await conn.execute(delete(audit_records).where(c.instance_id == instance, c.seq < upper))).rowcount


class RetentionTask:
    """Runs `purge` daily inside the gateway and records it in the trail."""

    def __init__(
        self,
        database: Database,
        keys: AuditKeys,
        policy: Callable[[], Policy],
        record: Callable[[AuditEntry], Awaitable[None]],
        first_delay: float = FIRST_RUN_DELAY,
        interval: float = DAY,
    ) -> None:
        self.database, self.keys, self.policy, self.record = database, keys, policy, record
        self.first_delay, self.interval = first_delay, interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-retention")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def run_once(self) -> PurgeResult | None:
        try:
            result = await purge(self.database, self.keys, self.policy())
        except Exception:
            log.exception("scheduled audit purge failed; retrying tomorrow")
            return None
        log.info("audit purge done", records=result.records, login_history=result.login_history,
                 known_ips=result.known_ips)
        await self.record(result.entry())
        return result

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)
