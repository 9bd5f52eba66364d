"""The audit writer process (real child processes, real databases): records acknowledged
only once stored, one chain order per gateway process, and nothing lost or stored twice
when the writer process dies, whether before or after its commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from gateway.audit.entry import AuditEntry
from gateway.audit.keys import key_path, load_keys
from gateway.audit.services import AuditServices, build_audit
from gateway.audit.verify import verify_trail
from gateway.audit.writer import AuditUnavailable
from gateway.audit.writer_process import ProcessWriter
from gateway.audit.writer_zygote import Zygote
from gateway.db import Database, audit_records, open_database
from gateway.policy.reload import PolicyHolder
from gateway.policy.schema import AuditPolicy, Policy
from tests.test_audit_support import TcpCut, audit_config

pytestmark = pytest.mark.slow
INSTANCE = "gw-test"


def entry(n: int, prefix: str = "r") -> AuditEntry:
    return AuditEntry(request_id=f"{prefix}{n:05d}", at=time.time(), decision="allowed", user=f"staff{n % 3}",
                      client_ip="192.0.2.7", method="GET", path=f"/p/{n}", query="page=2&token=abc", status=200)


class Stack:
    def __init__(self, database: Database, services: AuditServices, data_dir: Path) -> None:
        self.database, self.services, self.data_dir = database, services, data_dir

    @property
    def writer(self) -> ProcessWriter:
        writer = self.services.writer
        assert isinstance(writer, ProcessWriter)
        return writer

    async def paths(self) -> list[str]:
        async with self.database.connect() as conn:
            return list((await conn.execute(select(audit_records.c.path).order_by(audit_records.c.seq))).scalars())

    async def verified(self) -> bool:
        report = await verify_trail(self.database, load_keys(key_path(self.data_dir)))
        return report.ok


@contextlib.asynccontextmanager
async def open_stack(tmp_path: Path, url: str, policy: Policy, **extra: object) -> AsyncIterator[Stack]:
    config = audit_config(tmp_path, url)
    database = await open_database(config.resolved_database_url)
    services = await build_audit(config, PolicyHolder([], policy), database)
    if extra:  # a writer with another child program, on the same settings
        old = services.writer
        assert isinstance(old, ProcessWriter)
        services.writer = ProcessWriter(old._start, old._settings, old._rules, **extra)  # type: ignore[arg-type]
    await services.writer.start()
    try:
        yield Stack(database, services, tmp_path)
    finally:
        await services.writer.close()
        await services.alerter.close()
        services.geo.close()
        await database.close()


async def until(predicate, what: str) -> None:
    """Wait for a condition the writer reaches on its own (bounded so a bug fails, not hangs)."""
    for _ in range(600):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_records_are_written_by_a_child_process_in_one_chain_order(tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(batch_size=20, flush_interval=0.05))
    async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy) as stack:
        writer = stack.writer
        for n in range(150):
            if n % 3 == 0:
                await writer.put_durable(entry(n))
            else:
                assert writer.offer(entry(n))
        assert writer.pid is not None and writer.pid != os.getpid()
        await writer.close()
        assert writer.queued == 0
        assert await stack.paths() == [f"/p/{n}" for n in range(150)]
        assert await stack.verified()
        async with stack.database.connect() as conn:
            query, user = (await conn.execute(select(audit_records.c.query, audit_records.c.user_name)
                                              .where(audit_records.c.path == "/p/1"))).one()
        assert query == "page&token"  # scrubbed in the child, as in the gateway
        assert user != "staff1"  # sealed with the audit key


async def test_the_writer_processes_import_no_web_stack(tmp_path: Path) -> None:
    code = ("import sys, gateway.audit.writer_zygote, gateway.audit.writer_child; "
            "print(sorted(m for m in ('aiohttp', 'httptools', 'gateway.proxy') if m in sys.modules))")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                   cwd=Path(__file__).parent.parent)
    out, _ = await process.communicate()
    assert out.strip() == b"[]"


async def test_strict_waits_for_the_store_and_survives_a_killed_writer(tmp_path: Path,
                                                                      postgres_database_url: str) -> None:
    """The chain head is locked by another transaction: the child blocks in its commit, the
    strict record is not acknowledged; the child is killed there; the record is stored
    exactly once by the next child, and only then does the producer go on."""
    policy = Policy(audit=AuditPolicy(flush_interval=3600))
    async with open_stack(tmp_path, postgres_database_url, policy) as stack:
        writer = stack.writer
        await writer.put_durable(entry(0))  # the head row exists from here on
        target = make_url(postgres_database_url)
        locker = await asyncpg.connect(host=target.host, port=target.port, user=target.username,
                                       database=target.database)
        try:
            lock = locker.transaction()
            await lock.start()
            await locker.execute("SELECT seq FROM audit_chain_heads WHERE instance_id = $1 FOR UPDATE", INSTANCE)
            durable = asyncio.create_task(writer.put_durable(entry(1)))

            async def child_blocked() -> bool:
                waiting = await locker.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                                "'Lock' AND datname = $1", target.database)
                return bool(waiting)

            await until(child_blocked, "the writer process waits for the chain head")
            assert not durable.done() and writer.queued == 1  # not acknowledged while not stored
            first_child = writer.pid
            assert first_child is not None
            os.kill(first_child, signal.SIGKILL)
            await until(lambda: _true(writer.pid != first_child and writer.restarts == 1), "a new writer process")
            await until(child_blocked, "the new writer process waits for the chain head")
            assert not durable.done()  # strict: still waiting, never answered unstored
        finally:
            await lock.rollback()
            await locker.close()
        await asyncio.wait_for(durable, 60)
        assert await stack.paths() == ["/p/0", "/p/1"]
        assert await stack.verified()


async def _true(value: bool) -> bool:
    return value


async def test_writer_killed_after_commit_before_ack_stores_nothing_twice(
    tmp_path: Path, postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child dies right after committing its third batch, before acknowledging it:
    the gateway re-sends everything unacknowledged, the new child skips what is stored."""
    marker = tmp_path / "crashed"
    monkeypatch.setenv("AUDIT_CRASH_MARKER", str(marker))
    monkeypatch.setenv("AUDIT_CRASH_AT", "3")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent.parent))
    policy = Policy(audit=AuditPolicy(batch_size=10, flush_interval=0.02, queue_size=10_000))
    forks = Zygote("tests.audit_crashing_writer")
    async with open_stack(tmp_path, postgres_database_url, policy, forks=forks) as stack:
        writer = stack.writer
        for n in range(200):
            writer.force(entry(n))
            if n % 10 == 9:
                await asyncio.sleep(0)  # let frames go out as requests would
        await until(lambda: _true(marker.exists() and writer.restarts == 1 and writer.queued == 0),
                    "the crash, the restart and every record acknowledged")
        await writer.close()
        assert await stack.paths() == [f"/p/{n}" for n in range(200)]
        assert await stack.verified()
    forks.close()


async def test_unacknowledged_normal_records_are_resent_after_a_kill(tmp_path: Path) -> None:
    """kill -9 of the writer with normal records waiting in it for their flush: none lost,
    none twice, order kept, the chain verifies."""
    policy = Policy(audit=AuditPolicy(batch_size=1000, flush_interval=3600))
    async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy) as stack:
        writer = stack.writer
        for n in range(30):
            await writer.put_durable(entry(n))  # stored and acknowledged
        for n in range(30, 80):
            writer.offer(entry(n))  # waiting for an hour-long flush interval in the child
        await asyncio.sleep(0)
        assert writer.queued == 50
        first_child = writer.pid
        assert first_child is not None
        os.kill(first_child, signal.SIGKILL)
        await until(lambda: _true(writer.restarts == 1), "a new writer process")
        assert writer.queued == 50  # held until a child acknowledges them
        await writer.close()
        assert writer.queued == 0
        assert await stack.paths() == [f"/p/{n}" for n in range(80)]
        assert await stack.verified()


async def test_a_refused_strict_record_is_stored_as_the_client_was_answered(tmp_path: Path,
                                                                           postgres_database_url: str) -> None:
    """Database and spool both failing: the strict producer is told (AuditUnavailable), answers
    503 and says so in its entry; once the database is back the record stored says 503."""
    target = make_url(postgres_database_url)
    (tmp_path / "audit-spool").write_text("a file where the spool directory should be")
    policy = Policy(audit=AuditPolicy(flush_interval=0.05))
    async with TcpCut(target.host or "127.0.0.1", target.port or 5432) as cut:
        async with open_stack(tmp_path, cut.url_for(postgres_database_url), policy) as stack:
            writer = stack.writer
            cut.cut()
            refused = entry(0)
            with pytest.raises(AuditUnavailable):
                await writer.put_durable(refused)
            refused.status, refused.decision, refused.reason = 503, "refused", "audit trail unavailable"
            await until(lambda: _true(writer.stuck), "the writer reports it can store nothing")
            cut.restore()
            await until(lambda: _true(writer.queued == 0), "the record stored once the database is back")
            async with stack.database.connect() as conn:
                rows = (await conn.execute(select(audit_records.c.status, audit_records.c.decision))).all()
            assert [tuple(r) for r in rows] == [(503, "refused")]


async def test_writers_come_back_when_their_zygote_died_too(tmp_path: Path) -> None:
    """The process writers are forked from is killed, then the writer: the next writer comes
    from a new zygote, and every record held is stored once."""
    forks = Zygote()
    policy = Policy(audit=AuditPolicy(batch_size=1000, flush_interval=3600))
    async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy, forks=forks) as stack:
        writer = stack.writer
        await writer.put_durable(entry(0))
        for n in range(1, 20):
            writer.offer(entry(n))
        first_zygote, first_child = forks.pid, writer.pid
        assert first_zygote is not None and first_child is not None
        os.kill(first_zygote, signal.SIGKILL)
        os.kill(first_child, signal.SIGKILL)
        await until(lambda: _true(writer.restarts == 1 and writer.pid != first_child), "a new writer process")
        assert forks.pid not in (None, first_zygote)
        await writer.close()
        assert await stack.paths() == [f"/p/{n}" for n in range(20)]
        assert await stack.verified()
    forks.close()
