"""The durable store on SQLite (a temporary file) and a real PostgreSQL (a throwaway
database per test): schema creation and upgrades, concurrent starts, aware datetimes,
constraints."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, inspect, insert, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from gateway.db import (
    MIGRATIONS,
    Database,
    SchemaTooNewError,
    audit_chain_heads,
    audit_records,
    enrollment_invites,
    known_ips,
    login_history,
    metadata,
    normalise_url,
    open_database,
    recovery_codes,
    schema_migrations,
    totp_factors,
    users,
    webauthn_credentials,
)
from gateway.db import engine as engine_module

EXPECTED_TABLES = {
    "schema_migrations", "users", "totp_factors", "webauthn_credentials", "recovery_codes",
    "enrollment_invites", "known_ips", "login_history", "audit_records", "audit_chain_heads",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/gateway.db"
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


async def _add_user(db: Database, name: str = "alice") -> int:
    async with db.begin() as conn:
        result = await conn.execute(insert(users).values(name=name))
        return int(result.inserted_primary_key[0])


def _audit_row(seq: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "instance_id": "gw-1", "seq": seq, "at": datetime.now(UTC), "decision": "allow",
        "prev_mac": "0" * 64, "mac": f"{seq:064x}",
    }
    row.update(overrides)
    return row


# -- schema ----------------------------------------------------------------------------
async def test_fresh_database_gets_full_schema(db: Database) -> None:
    assert db.schema_version == len(MIGRATIONS)
    assert db.applied == tuple(range(1, len(MIGRATIONS) + 1))
    async with db.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        versions = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
    assert EXPECTED_TABLES <= names
    assert {t.name for t in metadata.sorted_tables} <= names
    assert sorted(versions) == list(range(1, len(MIGRATIONS) + 1))


async def test_reopen_runs_no_migration_again(db_url: str) -> None:
    first = await open_database(db_url)
    await _add_user(first, "kept")
    await first.close()
    second = await open_database(db_url)
    try:
        assert second.applied == ()
        assert second.schema_version == len(MIGRATIONS)
        async with second.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(schema_migrations)))
            assert count.scalar() == len(MIGRATIONS)
            assert (await conn.execute(select(users.c.name))).scalars().all() == ["kept"]
    finally:
        await second.close()


async def test_concurrent_opens_of_a_fresh_database(db_url: str) -> None:
    results = await asyncio.gather(*(open_database(db_url) for _ in range(4)))
    try:
        assert sum(1 for d in results if d.applied) == 1
        assert all(d.schema_version == len(MIGRATIONS) for d in results)
    finally:
        for database in results:
            await database.close()


async def test_concurrent_opens_from_separate_processes(db_url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from gateway.db import open_database\n"
        "async def main():\n"
        "    db = await open_database(sys.argv[1])\n"
        "    print(len(db.applied))\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    cwd = Path(__file__).resolve().parent.parent
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, db_url, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await p.communicate() for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err.decode()
    applied = sorted(int(out) for out, _ in outputs)
    assert applied == [0, 0, len(MIGRATIONS)]


async def test_later_step_upgrades_existing_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await open_database(db_url)).close()
    calls: list[int] = []

    def add_table(conn: Connection) -> None:
        calls.append(1)
        conn.exec_driver_sql("CREATE TABLE gw_extra (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(engine_module, "MIGRATIONS", [*MIGRATIONS, add_table])
    upgraded = await open_database(db_url)
    try:
        assert upgraded.applied == (len(MIGRATIONS) + 1,)
        async with upgraded.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert "gw_extra" in names
    finally:
        await upgraded.close()
    again = await open_database(db_url)
    await again.close()
    assert again.applied == () and calls == [1]


async def test_failed_step_rolls_back(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await (await open_database(db_url)).close()

    def broken(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE gw_half (id INTEGER PRIMARY KEY)")
        raise RuntimeError("step failed")

    monkeypatch.setattr(engine_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="step failed"):
        await open_database(db_url)
    monkeypatch.setattr(engine_module, "MIGRATIONS", list(MIGRATIONS))
    database = await open_database(db_url)
    try:
        async with database.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert "gw_half" not in names  # transactional DDL on both backends
        assert database.schema_version == len(MIGRATIONS)
    finally:
        await database.close()


async def test_newer_schema_is_refused(db: Database, db_url: str) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(schema_migrations).values(version=len(MIGRATIONS) + 1))
    with pytest.raises(SchemaTooNewError):
        await open_database(db_url)


# -- values ----------------------------------------------------------------------------
async def test_datetimes_round_trip_as_aware_utc(db: Database) -> None:
    paris_summer = timezone(timedelta(hours=2))
    created = datetime(2026, 7, 14, 23, 30, 15, 123456, tzinfo=paris_summer)
    async with db.begin() as conn:
        await conn.execute(insert(users).values(name="bob", created_at=created))
        row = (await conn.execute(select(users).where(users.c.name == "bob"))).one()
    assert row.created_at == created
    assert row.created_at.utcoffset() == timedelta(0)
    assert row.created_at == datetime(2026, 7, 14, 21, 30, 15, 123456, tzinfo=UTC)
    assert row.updated_at.tzinfo is not None and row.active is True
    assert row.deactivated_at is None


async def test_datetime_comparisons_in_sql(db: Database) -> None:
    user_id = await _add_user(db)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.begin() as conn:
        await conn.execute(insert(login_history), [
            {"user_id": user_id, "username": "alice", "at": base + timedelta(minutes=m),
             "ip": "192.0.2.1", "outcome": "success", "login_type": "password"}
            for m in (5, 1, 3)
        ])
        # The bound value is in another zone; the comparison must still be by instant.
        since = (base + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=-5)))
        rows = (await conn.execute(
            select(login_history.c.at).where(login_history.c.at >= since)
            .order_by(login_history.c.at)
        )).scalars().all()
    assert rows == [base + timedelta(minutes=3), base + timedelta(minutes=5)]


async def test_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(StatementError):
        async with db.begin() as conn:
            await conn.execute(insert(users).values(name="carol", created_at=datetime(2026, 1, 1)))


async def test_updated_at_moves_on_update(db: Database) -> None:
    user_id = await _add_user(db)
    async with db.begin() as conn:
        before = (await conn.execute(select(users.c.updated_at))).scalar_one()
        await asyncio.sleep(0.01)
        await conn.execute(update(users).where(users.c.id == user_id).values(active=False))
        after = (await conn.execute(select(users.c.updated_at, users.c.active))).one()
    assert after.updated_at > before and after.active is False


async def test_binary_and_factor_round_trip(db: Database) -> None:
    user_id = await _add_user(db)
    secret = bytes(range(256))
    async with db.begin() as conn:
        await conn.execute(insert(totp_factors).values(
            user_id=user_id, secret_ciphertext=secret, key_id="k1", last_step_offset=-1))
        await conn.execute(insert(webauthn_credentials).values(
            user_id=user_id, credential_id=b"\x00cred", public_key=b"\x01pk",
            sign_count=2**32 - 1, transports="usb,internal"))
        await conn.execute(insert(recovery_codes).values(user_id=user_id, code_hash="h1"))
        await conn.execute(insert(enrollment_invites).values(
            user_id=user_id, code_hash="inv", expires_at=datetime.now(UTC) + timedelta(days=1)))
        factor = (await conn.execute(select(totp_factors))).one()
        credential = (await conn.execute(select(webauthn_credentials))).one()
    assert factor.secret_ciphertext == secret and factor.last_step_offset == -1
    assert credential.sign_count == 2**32 - 1 and credential.credential_id == b"\x00cred"


async def test_audit_records_ids_defaults_and_chain_head(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(audit_records), [_audit_row(1), _audit_row(2)])
        await conn.execute(insert(audit_chain_heads).values(instance_id="gw-1", seq=2, mac="m"))
        rows = (await conn.execute(select(audit_records).order_by(audit_records.c.seq))).all()
        head = (await conn.execute(select(audit_chain_heads))).one()
    assert [r.id for r in rows] == sorted({r.id for r in rows}) and len(rows) == 2
    assert rows[0].channel == "http" and rows[0].identifiers == "{}" and rows[0].bytes_in == 0
    assert head.seq == 2 and head.updated_at.tzinfo is not None


# -- constraints -----------------------------------------------------------------------
async def test_unique_user_name(db: Database) -> None:
    await _add_user(db, "alice")
    with pytest.raises(IntegrityError):
        await _add_user(db, "alice")


async def test_unique_known_ip_per_user(db: Database) -> None:
    alice, bob = await _add_user(db, "alice"), await _add_user(db, "bob")
    async with db.begin() as conn:
        await conn.execute(insert(known_ips).values(user_id=alice, ip_prefix="2001:db8:1::/64"))
        await conn.execute(insert(known_ips).values(user_id=bob, ip_prefix="2001:db8:1::/64"))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(known_ips).values(user_id=alice, ip_prefix="2001:db8:1::/64"))


async def test_unique_audit_sequence_per_instance(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(audit_records).values(**_audit_row(1)))
        await conn.execute(insert(audit_records).values(**_audit_row(1, instance_id="gw-2")))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(audit_records).values(**_audit_row(1)))


async def test_unique_webauthn_credential_id(db: Database) -> None:
    alice, bob = await _add_user(db, "alice"), await _add_user(db, "bob")
    values = {"credential_id": b"same", "public_key": b"pk"}
    async with db.begin() as conn:
        await conn.execute(insert(webauthn_credentials).values(user_id=alice, **values))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(webauthn_credentials).values(user_id=bob, **values))


async def test_foreign_keys_are_enforced_and_cascade(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(recovery_codes).values(user_id=999_999, code_hash="x"))
    user_id = await _add_user(db)
    async with db.begin() as conn:
        await conn.execute(insert(recovery_codes).values(user_id=user_id, code_hash="x"))
        await conn.execute(insert(login_history).values(
            user_id=user_id, username="alice", ip="192.0.2.1", outcome="success",
            login_type="password"))
        await conn.execute(users.delete().where(users.c.id == user_id))
        codes = (await conn.execute(select(func.count()).select_from(recovery_codes))).scalar()
        history = (await conn.execute(select(login_history.c.user_id))).scalars().all()
    assert codes == 0
    assert history == [None]  # history survives the user row


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            await conn.execute(insert(users).values(name="ghost"))
            raise RuntimeError
    async with db.connect() as conn:
        assert (await conn.execute(select(users.c.name))).scalars().all() == []


# -- backend details -------------------------------------------------------------------
async def test_sqlite_pragmas(tmp_path: Path) -> None:
    database = await open_database(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    try:
        async with database.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() > 0
    finally:
        await database.close()


async def test_sqlite_in_memory_keeps_one_database() -> None:
    database = await open_database("sqlite://")
    try:
        await _add_user(database)
        async with database.connect() as conn:
            assert (await conn.execute(select(users.c.name))).scalars().all() == ["alice"]
    finally:
        await database.close()


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
    ("postgresql://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
    ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ("postgresql://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ("sqlite:///var/gw.db", "sqlite+aiosqlite:///var/gw.db"),
    ("sqlite+aiosqlite:////abs/gw.db", "sqlite+aiosqlite:////abs/gw.db"),
])
def test_normalise_url(given: str, expected: str) -> None:
    assert normalise_url(given).render_as_string(hide_password=False) == expected


def test_unsupported_backend() -> None:
    with pytest.raises(ValueError):
        normalise_url("mysql://u@h/db")
