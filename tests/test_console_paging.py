"""The console's reads over a large trail, on small data and both backends: newest-first
keyset paging of audit records and logins visits every match once, in (at, id) order,
records of one instant included; tags match exactly (the PostgreSQL GIN expression and
SQLite's LIKE); the audit total is estimated, not counted. The 20-million-record
timings are bench/console_bench.py's, not a test's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from gateway.audit.entry import AuditEntry
from gateway.audit.keys import AuditKeys
from gateway.audit.logins import recent_logins
from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.store import AuditStore
from gateway.db import Database, login_history, open_database

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path}/gw.db" if request.param == "sqlite" else request.getfixturevalue(
        "postgres_database_url")
    database = await open_database(str(url))
    try:
        yield database
    finally:
        await database.close()


def _entry(n: int, at: datetime, ip: str, reservation: str | None = None) -> AuditEntry:
    return AuditEntry(request_id=f"r{n}", at=at.timestamp(), decision="refused" if n % 5 == 0 else "allowed",
                      user="alice" if n % 2 else None, client_ip=ip, method="GET", path=f"/rooms/{n % 3}",
                      identifiers={"reservation": reservation} if reservation else {}, prepared=True)


async def _pages(reader: AuditReader, filters: QueryFilter, size: int) -> list[int]:
    seen: list[int] = []
    before = 0
    while True:
        page = [r async for r in reader.records(filters, before_id=before, limit=size + 1)]
        seen += [r["id"] for r in page[:size]]
        if len(page) <= size:
            return seen
        before = page[size - 1]["id"]


async def test_audit_pages_follow_time_then_id_and_tags_match_exactly(database: Database) -> None:
    keys = AuditKeys.from_master(b"k" * 32)
    store = AuditStore(database, keys)
    # Written out of time order (a spool replay does that), four records per instant.
    entries = [_entry(n, START + timedelta(minutes=(37 * n) % 11), "10.0.0.1" if n % 3 else "10.0.0.10",
                      "1003" if n % 4 == 0 else "10030" if n % 4 == 1 else None) for n in range(44)]
    await store.append(entries, "gw-1")
    reader = AuditReader(database, keys)
    everything = [r async for r in reader.records()]
    expected = [r["id"] for r in sorted(everything, key=lambda r: (r["at"], r["id"]), reverse=True)]
    for size in (1, 3, 7, 50):
        assert await _pages(reader, QueryFilter(), size) == expected

    by_reservation = await _pages(reader, QueryFilter(identifier=("reservation", "1003")), 4)
    assert len(by_reservation) == 11  # exactly 1003: none of the 10030 ones
    by_ip = await _pages(reader, QueryFilter(ip="10.0.0.1"), 5)
    assert set(by_ip) == {r["id"] for r in everything if r["client_ip"] == "10.0.0.1"} and len(by_ip) == 29
    refused_by_alice = await _pages(reader, QueryFilter(decision="refused", user="alice"), 2)
    assert refused_by_alice == [i for i in expected if (r := next(e for e in everything if e["id"] == i))
                                and r["decision"] == "refused" and r["user"] == "alice"]
    window = QueryFilter(since=START + timedelta(minutes=3), until=START + timedelta(minutes=6))
    assert await _pages(reader, window, 2) == [
        i for i in expected
        if window.since <= datetime.fromisoformat(next(e for e in everything if e["id"] == i)["at"]) < window.until]
    assert await _pages(reader, QueryFilter(path="/rooms/1", since=START), 3) == [
        i for i in expected if next(e for e in everything if e["id"] == i)["path"] == "/rooms/1"]

    estimate = await reader.estimated_total()
    assert estimate == 44 or (database.dialect == "postgresql" and estimate in (0, 44))  # before ANALYZE: 0


async def test_login_history_pages_by_keyset(database: Database) -> None:
    async with database.begin() as conn:
        await conn.execute(insert(login_history), [
            {"username": "alice", "at": START + timedelta(seconds=n // 3), "ip": "10.0.0.1", "outcome": "success",
             "login_type": "password+totp"} for n in range(20)])  # three logins per second: ties
    everything = await recent_logins(database, limit=100)
    seen, before = [], None
    while True:
        page = await recent_logins(database, limit=4, before=before)
        seen += [r["id"] for r in page]
        if len(page) < 4:
            break
        before = page[-1]["id"]
    assert seen == [r["id"] for r in everything] and len(set(seen)) == 20
    assert [r["id"] for r in everything] == [r["id"] for r in sorted(everything, key=lambda r: (r["at"], r["id"]),
                                                                     reverse=True)]
