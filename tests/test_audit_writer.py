"""The writer and its spool, with the database made to fail on demand: order kept,
nothing twice, nothing lost, crash leftovers replayed, and the schema upgrade."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, inspect, select

from gateway.audit.prepare import EntryPreparer
from gateway.audit.entry import AuditEntry
from gateway.audit.keys import key_path, load_or_create_keys
from gateway.audit.spool import Spool
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_trail
from gateway.audit.writer import AuditUnavailable, AuditWriter, WriterSettings
from gateway.db import MIGRATIONS, audit_records, open_database
from gateway.policy.schema import Policy


class FlakyStore(AuditStore):
    """The real store, failing while `down` is set (before or after committing)."""

    down = False
    fail_after_commit = 0  # commit, then raise: the writer cannot know it worked

    async def append(self, entries, instance_id, *, dedupe=False):
        if self.down:
            raise ConnectionError("database unreachable")
        head = await super().append(entries, instance_id, dedupe=dedupe)
        if self.fail_after_commit:
            self.fail_after_commit -= 1
            raise ConnectionResetError("connection lost during COMMIT")
        return head


def entry(n: int) -> AuditEntry:
    return AuditEntry(request_id=f"r{n:05d}", at=time.time(), decision="allowed", client_ip="192.0.2.1",
                      method="GET", path=f"/p/{n}", status=200)


@pytest.fixture
async def parts(tmp_path: Path):
    database = await open_database(f"sqlite:///{tmp_path}/gateway.db")
    keys = load_or_create_keys(key_path(tmp_path))
    store = FlakyStore(database, keys)
    yield database, keys, store, tmp_path
    await database.close()


def make_writer(store, tmp_path: Path, **settings) -> AuditWriter:
    options = {"batch_size": 10, "flush_interval": 0.05, "queue_size": 1000} | settings
    policy = Policy()
    return AuditWriter(store, Spool(tmp_path / "audit-spool", "gw-w"), "gw-w", EntryPreparer(lambda: policy, None),
                       lambda: WriterSettings(**options))


async def stored(database) -> list[str]:
    async with database.connect() as conn:
        return list((await conn.execute(select(audit_records.c.path).order_by(audit_records.c.seq))).scalars())


async def test_outage_spools_then_replays_in_order(parts) -> None:
    database, keys, store, tmp_path = parts
    writer = make_writer(store, tmp_path)
    await writer.start()
    for n in range(25):
        await writer.put(entry(n))
    await asyncio.sleep(0.2)
    store.down = True
    for n in range(25, 60):
        await writer.put(entry(n))
        await asyncio.sleep(0.002)
    for _ in range(200):  # the writer flushes on its own schedule: wait for it, not a fixed time
        if writer.store_failing and writer.spooled >= 30:
            break
        await asyncio.sleep(0.05)
    assert writer.store_failing and writer.spooled >= 30
    store.down = False
    for n in range(60, 70):  # arrive while the spool is still pending: queued behind it
        await writer.put(entry(n))
    await writer.close()
    assert await stored(database) == [f"/p/{n}" for n in range(70)]
    assert not list((tmp_path / "audit-spool").glob("*.jsonl"))
    assert (await verify_trail(database, keys)).ok


async def test_ambiguous_commit_is_not_stored_twice(parts) -> None:
    database, keys, store, tmp_path = parts
    store.fail_after_commit = 1
    writer = make_writer(store, tmp_path)
    await writer.start()
    for n in range(30):
        await writer.put(entry(n))
    await writer.close()
    assert await stored(database) == [f"/p/{n}" for n in range(30)]


async def test_crash_leftover_is_claimed_and_replayed_first(parts) -> None:
    database, keys, store, tmp_path = parts
    crashed = Spool(tmp_path / "audit-spool", "gw-old")
    crashed.append([EntryPreparer(lambda: Policy(), None)(entry(n)) for n in range(5)])
    segment = crashed.segments[0]
    with open(segment.path, "ab") as handle:  # torn last line: died mid-write
        handle.write(b'{"request_id": "r99999", "at": 1.0, "decis')
    crashed.release()  # the process is gone: its lock with it
    writer = make_writer(store, tmp_path)
    await writer.start()
    await writer.put(entry(5))
    await writer.close()
    async with database.connect() as conn:
        rows = (await conn.execute(select(audit_records.c.instance_id, audit_records.c.path)
                                   .order_by(audit_records.c.id))).all()
    assert [tuple(r) for r in rows] == [("gw-old", f"/p/{n}") for n in range(5)] + [("gw-w", "/p/5")]
    assert not list((tmp_path / "audit-spool").glob("*.jsonl"))


async def test_segment_held_by_a_live_process_is_left_alone(parts) -> None:
    database, keys, store, tmp_path = parts
    live = Spool(tmp_path / "audit-spool", "gw-live")
    live.append([EntryPreparer(lambda: Policy(), None)(entry(1))])
    writer = make_writer(store, tmp_path)
    await writer.start()
    await writer.close()
    assert await stored(database) == []
    live.release()


async def test_shutdown_with_database_away_keeps_the_spool(parts) -> None:
    database, keys, store, tmp_path = parts
    store.down = True
    writer = make_writer(store, tmp_path, flush_interval=10)
    await writer.start()
    for n in range(15):
        writer.offer(entry(n))
    await writer.close()  # drains to the spool
    lines = [json.loads(line) for path in (tmp_path / "audit-spool").glob("*.jsonl")
             for line in path.read_text().splitlines()[1:]]
    assert [line["path"] for line in lines] == [f"/p/{n}" for n in range(15)]
    store.down = False
    writer = make_writer(store, tmp_path)
    await writer.start()
    await writer.close()
    assert await stored(database) == [f"/p/{n}" for n in range(15)]


async def test_database_and_spool_both_failing_keeps_records_in_memory(parts) -> None:
    database, keys, store, tmp_path = parts
    (tmp_path / "audit-spool").write_text("a file where the spool directory should be")
    store.down = True
    writer = make_writer(store, tmp_path)
    await writer.start()
    with pytest.raises(AuditUnavailable):
        await writer.put_durable(entry(0))
    writer.offer(entry(1))
    await asyncio.sleep(0.1)
    assert writer.stuck and writer.queued == 2
    store.down = False
    for _ in range(100):  # the writer retries with back-off (at most 5 s)
        await asyncio.sleep(0.1)
        if not writer.stuck and not writer.queued:
            break
    assert not writer.stuck and writer.queued == 0
    await writer.close()
    assert await stored(database) == ["/p/0", "/p/1"]


async def test_strict_waits_for_storage_and_groups_commits(parts) -> None:
    database, keys, store, tmp_path = parts
    writer = make_writer(store, tmp_path, flush_interval=3600, batch_size=500)
    await writer.start()
    # Durable puts commit on their own, not at the (hour-long) flush interval; the timeout
    # only keeps a regression from hanging the suite.
    await asyncio.wait_for(asyncio.gather(*(writer.put_durable(entry(n)) for n in range(50))), 120)
    assert len(await stored(database)) == 50  # durable before put_durable returned
    async with database.connect() as conn:
        head = (await conn.execute(select(func.max(audit_records.c.seq)))).scalar()
    assert head == 50
    await writer.close()


async def test_flush_by_time_and_by_size(parts) -> None:
    database, keys, store, tmp_path = parts
    writer = make_writer(store, tmp_path, flush_interval=0.3, batch_size=10)
    await writer.start()
    for n in range(3):
        writer.offer(entry(n))
    await asyncio.sleep(0.1)
    assert await stored(database) == []  # neither full nor old yet
    await asyncio.sleep(0.4)
    assert len(await stored(database)) == 3
    for n in range(3, 13):
        writer.offer(entry(n))
    await asyncio.sleep(0.1)
    assert len(await stored(database)) == 13
    await writer.close()


async def test_schema_upgrade_from_the_previous_version(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A database made before the audit tables: migration 3 brings it to the current schema."""
    for url in (f"sqlite:///{tmp_path}/old.db", request.getfixturevalue("postgres_database_url")):
        database = await open_database(url)

        def downgrade(conn: Connection) -> None:
            conn.exec_driver_sql("DROP TABLE subject_keys")
            conn.exec_driver_sql("DROP TABLE audit_anchors")
            for index in inspect(conn).get_indexes("audit_records"):  # as before migration 3
                if not index["name"].startswith("uq_"):  # unique constraints stay
                    conn.exec_driver_sql(f"DROP INDEX {index['name']}")
            conn.exec_driver_sql("CREATE INDEX ix_audit_records_at ON audit_records (at)")
            conn.exec_driver_sql("ALTER TABLE audit_records DROP COLUMN subject")
            conn.exec_driver_sql("ALTER TABLE audit_records DROP COLUMN tags")
            conn.exec_driver_sql("CREATE INDEX ix_audit_records_user_name ON audit_records (user_name)")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 3")

        async with database.begin() as conn:
            await conn.run_sync(downgrade)
        await database.close()
        upgraded = await open_database(url)
        try:
            assert upgraded.applied == tuple(range(3, len(MIGRATIONS) + 1))
            store = AuditStore(upgraded, load_or_create_keys(key_path(tmp_path)))
            await store.append([AuditEntry(request_id="x", at=time.time(), decision="allowed", user="alice" * 40,
                                           client_ip="2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", prepared=True)], "gw")
            assert (await verify_trail(upgraded, store.keys)).ok
        finally:
            await upgraded.close()


async def test_records_after_close_are_still_written(parts) -> None:
    database, keys, store, tmp_path = parts
    writer = make_writer(store, tmp_path)
    await writer.start()
    writer.offer(entry(0))
    await writer.close()
    await writer.put(entry(1))  # e.g. the SMTP relay finishing a message during shutdown
    await writer.close()
    assert await stored(database) == ["/p/0", "/p/1"]


async def test_bench_writer_measurement_runs(tmp_path: Path) -> None:
    """bench/audit_bench.py's writer measurement, tiny: the benchmark keeps working."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit_bench", Path(__file__).parent.parent / "bench" / "audit_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rates = await bench.writer_throughput(f"sqlite:///{tmp_path}/bench.db", tmp_path, 400)
    assert rates["normal"] > 0 and rates["strict"] > 0
