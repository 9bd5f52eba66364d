"""Checking the trail: `pms-gateway audit verify`.

Walks each instance's chain in link order from its genesis (or its purge anchor) and
names the first record that was altered, removed or reordered, then keeps going (up to a
limit) so one break does not hide another. A record whose MAC no longer matches was
altered, or the chain was recomputed without the key; a gap in the sequence is removed
records; a record whose content verifies at another position was moved. The head kept in
the database and any heads exported outside it (heads.jsonl, copied log lines) must be
reached: if the trail stops short of them, its newest records were cut off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import anchor_mac, genesis, macs_equal, record_mac
from gateway.audit.heads import ExportedHead
from gateway.audit.keys import AuditKeys
from gateway.db import Database, audit_anchors, audit_chain_heads, audit_records

PAGE = 2000
MAX_FINDINGS = 20  # per instance; further breaks are counted, not diagnosed

Kind = Literal["altered", "removed", "reordered", "link_broken", "tail_missing", "anchor_invalid", "head_mismatch"]


@dataclass(frozen=True, slots=True)
class Finding:
    instance_id: str
    kind: Kind
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.instance_id}{where}: {self.kind.replace('_', ' ')}: {self.message}"


@dataclass(slots=True)
class ChainSummary:
    instance_id: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    anchored_at: int | None = None
    heads_checked: int = 0
    unreported: int = 0  # breaks beyond MAX_FINDINGS


@dataclass(slots=True)
class VerifyReport:
    chains: list[ChainSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and not any(c.unreported for c in self.chains)


def _describe(row: Row[Any]) -> str:
    at = row.at.isoformat(timespec="seconds") if row.at is not None else "?"
    return f"request {row.request_id}, {at}, {row.method or row.channel} {row.path or row.decision}"


class _ChainWalk:
    """State of one instance's walk; see the module docstring."""

    def __init__(self, conn: AsyncConnection, key: bytes, summary: ChainSummary, seq: int, prev: str,
                 wanted: set[int]) -> None:
        self.conn, self.key, self.summary = conn, key, summary
        self.seq, self.prev = seq, prev  # the position and MAC the next record must have
        self.consumed: set[int] = set()  # row ids taken out of storage order
        self.findings: list[Finding] = []
        self.wanted = wanted
        self.mac_at: dict[int, str] = {}

    def report(self, kind: Kind, seq: int | None, message: str, *, always: bool = False) -> None:
        if always or len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(self.summary.instance_id, kind, seq, message))
        else:
            self.summary.unreported += 1

    def valid_at(self, row: Row[Any], seq: int) -> bool:
        values: Mapping[str, Any] = row._mapping
        if seq != row.seq:
            values = {**values, "seq": seq}
        return macs_equal(record_mac(self.key, row.prev_mac, values), row.mac)

    def accept(self, row: Row[Any]) -> None:
        if self.seq in self.wanted:
            self.mac_at[self.seq] = row.mac
        self.prev, self.seq = row.mac, self.seq + 1
        self.summary.records += 1
        self.summary.last_seq = self.seq - 1

    async def successor(self, exclude: int) -> Row[Any] | None:
        """The stored record that links to the current position, wherever it sits."""
        if len(self.findings) >= MAX_FINDINGS:
            return None
        rows = await self.conn.execute(
            select(audit_records)
            .where(audit_records.c.instance_id == self.summary.instance_id,
                   audit_records.c.prev_mac == self.prev, audit_records.c.id != exclude)
            .order_by(audit_records.c.seq)
        )
        return next((r for r in rows if r.id not in self.consumed), None)

    async def visit(self, row: Row[Any]) -> None:
        if row.id in self.consumed:
            return
        while True:
            if row.prev_mac == self.prev:
                if self.valid_at(row, self.seq):
                    if row.seq != self.seq:
                        self.report("reordered", row.seq, f"the record written as seq {self.seq} is stored at "
                                    f"seq {row.seq} ({_describe(row)})")
                elif self.valid_at(row, row.seq) and row.seq != self.seq:
                    self.report("link_broken", row.seq, f"record does not follow seq {self.seq - 1}")
                else:
                    self.report("altered", row.seq, "its MAC does not match its content: the record was "
                                f"edited, or the chain recomputed without the key ({_describe(row)})")
                self.accept(row)
                return
            moved = await self.successor(exclude=row.id)
            if moved is not None:
                if self.valid_at(moved, self.seq):
                    if moved.seq != self.seq:
                        self.report("reordered", moved.seq, f"the record written as seq {self.seq} is stored at "
                                    f"seq {moved.seq} ({_describe(moved)})")
                else:
                    self.report("altered", moved.seq, f"its MAC does not match its content ({_describe(moved)})")
                self.consumed.add(moved.id)
                self.accept(moved)
                continue
            if row.seq > self.seq:
                last = row.seq - 1
                span = f"seq {self.seq}" if last == self.seq else f"seq {self.seq} to {last}"
                self.report("removed", self.seq, f"{span} missing: {last - self.seq + 1} record(s) deleted")
                self.seq = row.seq
            else:
                self.report("link_broken", row.seq, f"record does not follow seq {self.seq - 1}: the record "
                            "before it was replaced, or records were removed and renumbered")
            self.prev = row.prev_mac  # resynchronise on the stored link and check the rest


async def _rows(conn: AsyncConnection, instance_id: str, start: int) -> AsyncIterator[Row[Any]]:
    after = start - 1
    while True:
        page = (
            await conn.execute(
                select(audit_records)
                .where(audit_records.c.instance_id == instance_id, audit_records.c.seq > after)
                .order_by(audit_records.c.seq)
                .limit(PAGE)
            )
        ).all()
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1].seq


async def verify_trail(
    database: Database,
    keys: AuditKeys,
    exported: Sequence[ExportedHead] = (),
    instance: str | None = None,
) -> VerifyReport:
    report = VerifyReport()
    async with database.connect() as conn:
        instances = set((await conn.execute(select(audit_records.c.instance_id).distinct())).scalars())
        heads = {r.instance_id: r for r in await conn.execute(select(audit_chain_heads))}
        anchors = {r.instance_id: r for r in await conn.execute(select(audit_anchors))}
        instances |= set(heads) | set(anchors) | {e.instance_id for e in exported}
        if instance is not None:
            instances &= {instance}
        for name in sorted(instances):
            summary, findings = await _verify_chain(
                conn, keys, name, anchors.get(name), heads.get(name), [e for e in exported if e.instance_id == name]
            )
            report.chains.append(summary)
            report.findings.extend(findings)
    return report


async def _verify_chain(
    conn: AsyncConnection, keys: AuditKeys, instance: str, anchor: Row[Any] | None, head: Row[Any] | None,
    exported: list[ExportedHead],
) -> tuple[ChainSummary, list[Finding]]:
    summary = ChainSummary(instance)
    start, prev = 1, genesis(keys.chain, instance)
    anchor_findings: list[Finding] = []
    if anchor is not None:
        start, prev = int(anchor.seq), anchor.prev_mac
        summary.anchored_at = start
        if not macs_equal(anchor.mac, anchor_mac(keys.chain, instance, start, prev)):
            anchor_findings.append(Finding(instance, "anchor_invalid", start, "the purge anchor was not written "
                                           "with this key: records before it may have been removed"))
    exported = [e for e in exported if e.seq >= start]
    walk = _ChainWalk(conn, keys.chain, summary, start, prev, {e.seq for e in exported} | (
        {int(head.seq)} if head is not None else set()))
    walk.findings.extend(anchor_findings)
    async for row in _rows(conn, instance, start):
        if summary.first_seq is None:
            summary.first_seq = row.seq
        await walk.visit(row)
    end = walk.seq - 1  # the last position the trail reaches
    if head is not None and int(head.seq) >= start:
        if int(head.seq) > end:
            walk.report("tail_missing", end + 1, f"the database's chain head is at seq {head.seq} but the trail "
                        f"ends at seq {end}: the newest records were removed", always=True)
        elif not macs_equal(walk.mac_at.get(int(head.seq), ""), head.mac):
            walk.report("head_mismatch", int(head.seq), "the database's chain head does not match the record",
                        always=True)
    for exported_head in sorted(exported, key=lambda e: e.seq):
        summary.heads_checked += 1
        if exported_head.seq > end:
            walk.report("tail_missing", end + 1, f"a head exported at {exported_head.exported_at or '?'} is at "
                        f"seq {exported_head.seq} but the trail ends at seq {end}: "
                        f"{exported_head.seq - end} newest record(s) were removed", always=True)
            break
        if not macs_equal(walk.mac_at.get(exported_head.seq, ""), exported_head.mac):
            walk.report("head_mismatch", exported_head.seq, f"the record differs from the head exported at "
                        f"{exported_head.exported_at or '?'}", always=True)
    return summary, walk.findings
