"""Opening the durable database and bringing its schema up to date.

SQLite (one file, the default) suits a single instance; PostgreSQL serves several.
`open_database` accepts the URLs operators usually have at hand (`postgres://...`,
`postgresql://...?sslmode=require`, `sqlite:///path`) and picks the async drivers.

Schema versions: `schema_migrations` records every applied version. `MIGRATIONS[i]`
upgrades a database from version i to i+1; it is a plain function taking a synchronous
SQLAlchemy `Connection` (run via `run_sync`) inside the upgrade transaction. Step 1
creates the schema of `tables.py`; since that file always shows the latest schema, a
fresh database is created from it and stamped with the latest version at once, and steps
2+ only ever run on databases made by an older release. To change the schema: edit
`tables.py` and append a step that makes the same change to an existing database.

Several instances may start at once. All of this runs in one transaction that first
takes a lock: `pg_advisory_xact_lock` on PostgreSQL, `BEGIN IMMEDIATE` (the write lock,
waited for up to busy_timeout) on SQLite; the second starter then finds the work done.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, func, insert, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .tables import (
    api_client_credentials,
    api_tokens,
    audit_anchors,
    audit_records,
    metadata,
    operators,
    schema_migrations,
    subject_keys,
    support_grants,
)

MigrationStep = Callable[[Connection], None]


def _create_schema(conn: Connection) -> None:
    metadata.create_all(conn)


def _totp_last_step(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE totp_factors ADD COLUMN last_step BIGINT")


def _audit_erasure_and_anchors(conn: Connection) -> None:
    """Per-subject keys and purge anchors for the audit trail; ciphertext-sized personal
    columns; indexes by subject and request id instead of the (now encrypted) name and IP."""
    audit_anchors.create(conn, checkfirst=True)
    subject_keys.create(conn, checkfirst=True)
    conn.exec_driver_sql("ALTER TABLE audit_records ADD COLUMN subject VARCHAR(32)")
    conn.exec_driver_sql("ALTER TABLE audit_records ADD COLUMN tags TEXT NOT NULL DEFAULT ''")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_audit_records_user_name")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_audit_records_client_ip")
    conn.exec_driver_sql("CREATE INDEX ix_audit_records_subject ON audit_records (subject)")
    conn.exec_driver_sql("CREATE INDEX ix_audit_records_request_id ON audit_records (request_id)")
    if conn.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        conn.exec_driver_sql(
            "ALTER TABLE audit_records ALTER COLUMN user_name TYPE TEXT, ALTER COLUMN client_ip TYPE TEXT"
        )


def _support_grants(conn: Connection) -> None:
    support_grants.create(conn, checkfirst=True)


def _api_clients(conn: Connection) -> None:
    api_tokens.create(conn, checkfirst=True)
    api_client_credentials.create(conn, checkfirst=True)


def _operators(conn: Connection) -> None:
    """Console operator accounts; login history searchable by address within a time range."""
    operators.create(conn, checkfirst=True)
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_login_history_ip_at ON login_history (ip, at)")


def _login_owner(conn: Connection) -> None:
    """login_history.owner: the RDAP network owner known at the attempt. Checked first, as
    SQLite has no ADD COLUMN IF NOT EXISTS and a database re-stamped below this step has it."""
    if "owner" not in {column["name"] for column in inspect(conn).get_columns("login_history")}:
        conn.exec_driver_sql("ALTER TABLE login_history ADD COLUMN owner VARCHAR(255)")


def _console_indexes(conn: Connection) -> None:
    """Indexes for the console's newest-first searches over a large trail: (at, id),
    (subject, at, id), rare decisions and channels, and on PostgreSQL the GIN index of the
    tag list and (path text_pattern_ops, at). Built in the upgrade transaction: on a trail
    of 20 million records, some minutes (bench/console_bench.py)."""
    if conn.dialect.name == "postgresql":  # sorting in memory builds them several times faster
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_audit_records_at")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_audit_records_subject")
    for index in audit_records.indexes:
        if index.name != "ix_audit_records_request_id":
            index.create(conn, checkfirst=True)
    conn.exec_driver_sql("ANALYZE audit_records")


MIGRATIONS: list[MigrationStep] = [
    _create_schema,  # 1: initial schema
    _totp_last_step,  # 2: totp_factors.last_step (TOTP replay floor)
    _audit_erasure_and_anchors,  # 3: audit subject keys, purge anchors, tags
    _support_grants,  # 4: support_grants (vendor support access codes)
    _api_clients,  # 5: api_tokens, api_client_credentials (API clients)
    _operators,  # 6: operators (console accounts), login_history (ip, at) index
    _login_owner,  # 7: login_history.owner (RDAP network owner of the address)
    _console_indexes,  # 8: audit_records (at, id), (subject, at, id), rare decision/channel, tags, path
]
"""Ordered upgrade steps; append only, never reorder or edit a released step."""

# Arbitrary constant identifying "the gateway's schema upgrade" among advisory locks.
_PG_MIGRATION_LOCK = 0x67775F736368656D  # "gw_schem"

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BEGIN = "gw_sqlite_begin"  # execution option: "" (deferred) or "IMMEDIATE"


class SchemaTooNewError(RuntimeError):
    """The database was upgraded by a newer release; running older code on it could
    corrupt data, so we refuse to start instead."""


def normalise_url(url: str | URL) -> URL:
    """Map the usual spellings onto the async drivers: postgres:// and postgresql://
    -> postgresql+asyncpg:// (libpq's sslmode -> asyncpg's ssl), sqlite:// ->
    sqlite+aiosqlite://. Explicit driver names are kept."""
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+" + (driver or "asyncpg"))
        if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
            query = dict(parsed.query)
            query.setdefault("ssl", query.pop("sslmode"))
            parsed = parsed.set(query=query)
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+" + (driver or "aiosqlite"))
    else:
        raise ValueError(f"unsupported database backend {backend!r}; use sqlite or postgresql")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Per connection: WAL (readers never block the writer), enforced foreign keys and a
    busy timeout instead of instant "database is locked" errors. SQLAlchemy, not the
    sqlite3 module, emits BEGIN, so SELECTs and DDL are inside transactions too (see
    SQLAlchemy's "Serializable isolation / Savepoints / Transactional DDL")."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url` with the per-backend settings above."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if _is_sqlite_memory(parsed):
            kwargs.setdefault("poolclass", StaticPool)  # one connection = one database
        else:
            Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    # A pooled connection that died with the server is replaced before use (pre-ping), and
    # connecting is bounded: with PostgreSQL down a login gets a fast 503, not a hang.
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", 5)
    if parsed.drivername == "postgresql+asyncpg":
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", 3)
        connect_args.setdefault("command_timeout", 10)
    return create_async_engine(parsed, **kwargs)


@dataclass(slots=True)
class Database:
    """The durable store: an AsyncEngine whose schema is known to be current."""

    engine: AsyncEngine
    schema_version: int
    applied: tuple[int, ...]
    """Versions applied by this open (empty when the schema was already current)."""

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql": for the few queries that must differ."""
        return self.engine.dialect.name

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a transaction, committed on success."""
        return self.engine.begin()

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    async def close(self) -> None:
        await self.engine.dispose()


def _upgrade(conn: Connection) -> tuple[int, tuple[int, ...]]:
    """Runs inside the locked transaction; returns (version, versions applied)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    schema_migrations.create(conn, checkfirst=True)
    current = conn.execute(select(func.max(schema_migrations.c.version))).scalar() or 0
    latest = len(MIGRATIONS)
    if current > latest:
        raise SchemaTooNewError(
            f"database schema is at version {current}, this release knows up to {latest}; "
            "upgrade the gateway"
        )
    if current == latest:
        return current, ()
    if current == 0:
        MIGRATIONS[0](conn)  # fresh: tables.py is already the latest schema
    else:
        for step in MIGRATIONS[current:]:
            step(conn)
    applied = tuple(range(current + 1, latest + 1))
    conn.execute(insert(schema_migrations), [{"version": v} for v in applied])
    return latest, applied


async def open_database(url: str, **engine_kwargs: Any) -> Database:
    """Connect and upgrade the schema; safe to call from several processes at once."""
    engine = create_engine(url, **engine_kwargs)
    # PostgreSQL: the upgrade gets a connection of its own without the statement timeout
    # that keeps logins fast: building an index over millions of audit records (or waiting
    # for the instance doing it, on the advisory lock) takes minutes, not 10 s.
    upgrader = engine
    if engine.dialect.name == "postgresql":
        upgrader = create_engine(url, connect_args={"command_timeout": None})
    try:
        async with upgrader.connect() as conn:
            await conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            async with conn.begin():
                version, applied = await conn.run_sync(_upgrade)
    except BaseException:
        await engine.dispose()
        raise
    finally:
        if upgrader is not engine:
            await upgrader.dispose()
    return Database(engine, version, applied)

