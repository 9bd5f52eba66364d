"""Retention and erasure keep the trail verifiable: purging old records moves a sealed
anchor (and is itself recorded), erasing a person leaves their records' fields "[erased]"
while every MAC still holds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select
from typer.testing import CliRunner

from gateway.audit.entry import AuditEntry
from gateway.audit.heads import HeadExporter, heads_path
from gateway.audit.logins import LoginAttempt
from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.retention import RetentionTask, purge
from gateway.audit.verify import verify_trail
from gateway.cli import app
from gateway.db import audit_anchors, audit_records, login_history, subject_keys
from gateway.policy.schema import AuditPolicy, Policy
from tests.test_audit_support import audit_stack

DAY = 86400


def entry(n: int, age_days: float, user: str | None = "alice", ip: str = "192.0.2.1") -> AuditEntry:
    return AuditEntry(request_id=f"r{n}", at=time.time() - age_days * DAY, decision="allowed", user=user,
                      client_ip=ip, method="GET", path=f"/reservations/{n}", status=200,
                      identifiers={"reservation": str(n)}, prepared=True)


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": "[]",
           "PMS_GATEWAY_INSTANCE_ID": "gw-test"}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def test_purge_anchors_the_chain_and_is_recorded(tmp_path: Path) -> None:
    async with audit_stack(tmp_path) as stack:
        store = stack.services.store
        await store.append([entry(n, 500 - n) for n in range(20)], "gw-test")  # 500..481 days old
        await store.append([entry(n, 1) for n in range(20, 30)], "gw-test")
        await HeadExporter(stack.database, "gw-test", heads_path(tmp_path), lambda: 60).export()  # seq 30
        await stack.services.login_history.record(LoginAttempt("alice", "192.0.2.1", "success", "password+totp"))
        async with stack.database.begin() as conn:
            await conn.execute(insert(login_history).values(
                username="old", at=datetime.now(UTC) - timedelta(days=401), ip="192.0.2.9", outcome="failure",
                login_type="none"))
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "purge", "--operator", "root")
    assert code == 0, output
    assert "purged 20 audit records and 1 logins" in output
    async with audit_stack(tmp_path) as stack:
        async with stack.database.connect() as conn:
            seqs = list((await conn.execute(select(audit_records.c.seq).order_by(audit_records.c.seq))).scalars())
            anchor = (await conn.execute(select(audit_anchors))).one()
        assert seqs == list(range(21, 32)) and anchor.seq == 21  # 31: the purge record itself
        reader = AuditReader(stack.database, stack.services.keys)
        (record,) = [r async for r in reader.records(QueryFilter(decision="purge"))]
        assert record["user"] == "root" and record["extra"]["records"] == 20 and record["extra"]["anchors"] == {"gw-test": 21}
        report = await verify_trail(stack.database, stack.services.keys)
        assert report.ok and report.chains[0].anchored_at == 21
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert code == 0 and "anchored at seq 21 by retention" in output
    # the first retained record is protected like any other
    async with audit_stack(tmp_path) as stack:
        async with stack.database.begin() as conn:
            await conn.execute(delete(audit_records).where(audit_records.c.seq == 21))
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert code == 1 and "seq 21: removed" in output


async def test_everything_expired_and_the_daily_task(tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(retention=30 * DAY, flush_interval=0.05))
    async with audit_stack(tmp_path, policy) as stack:
        await stack.services.store.append([entry(n, 40) for n in range(5)], "gw-test")
        writer = stack.services.writer
        await writer.start()
        task = RetentionTask(stack.database, stack.services.keys, stack.policy, writer.put, first_delay=0)
        result = await task.run_once()
        await writer.close()
        assert result is not None and result.records == 5 and result.anchors == {"gw-test": 6}
        async with stack.database.connect() as conn:
            rows = (await conn.execute(select(audit_records.c.seq, audit_records.c.decision))).all()
        assert [tuple(r) for r in rows] == [(6, "purge")]
        assert (await verify_trail(stack.database, stack.services.keys)).ok
        assert (await purge(stack.database, stack.services.keys, policy)).records == 0  # idempotent


async def test_erasure_keeps_verification_and_reads_erased(tmp_path: Path) -> None:
    async with audit_stack(tmp_path) as stack:
        store = stack.services.store
        await store.append([entry(1, 0), entry(2, 0, user="bob"), entry(3, 0, user=None, ip="198.51.100.4"),
                            entry(4, 0)], "gw-test")
        await stack.services.login_history.record(LoginAttempt("alice", "192.0.2.1", "success", "password+totp"))
        async with stack.database.connect() as conn:
            wrapped = (await conn.execute(select(subject_keys.c.wrapped_key))).scalars().all()
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "erase", "--user", "Alice", "--yes",
                                           "--operator", "dpo")
    assert code == 0, output
    assert "2 audit records now read [erased]; deleted 1 logins, 1 known IPs" in output
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert code == 0, output
    async with audit_stack(tmp_path) as stack:
        reader = AuditReader(stack.database, stack.services.keys)
        records = {r["request_id"]: r async for r in reader.records()}
        for request_id in ("r1", "r4"):
            assert (records[request_id]["user"], records[request_id]["client_ip"],
                    records[request_id]["identifiers"]) == ("[erased]", "[erased]", "[erased]")
            assert records[request_id]["path"].startswith("/reservations/")  # not personal: kept
        assert records["r2"]["user"] == "bob" and records["r3"]["client_ip"] == "198.51.100.4"
        (erasure,) = [r for r in records.values() if r["decision"] == "erase"]
        assert erasure["user"] == "dpo" and "alice" not in str(erasure)
        assert [r async for r in reader.records(QueryFilter(user="alice"))] == []
        # alice's next visit gets a fresh key and is readable again
        await stack.services.store.append([entry(5, 0)], "gw-test")
        assert [r["request_id"] async for r in AuditReader(stack.database, stack.services.keys).records(
            QueryFilter(user="alice"))] == ["r5"]
    database_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("gateway.db*"))
    erased = [w for w in wrapped if w not in database_bytes]
    assert len(erased) == 1, "the erased key's bytes are still in the database file"


async def test_erase_anonymous_address(tmp_path: Path) -> None:
    async with audit_stack(tmp_path) as stack:
        await stack.services.store.append([entry(1, 0, user=None, ip="198.51.100.4")], "gw-test")
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "erase", "--ip", "198.51.100.4", "--yes")
    assert code == 0 and "1 audit records now read [erased]" in output
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "erase", "--ip", "203.0.113.1", "--yes")
    assert code == 0 and "no audit records for that address" in output
    code, output = await asyncio.to_thread(cli, tmp_path, "audit", "erase", "--yes")
    assert code == 1 and "exactly one of" in output
