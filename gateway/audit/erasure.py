"""Erasure of one person from the audit trail and login state (`pms-gateway audit erase`).

Destroys the subject's data key, so their name, addresses and identifiers in every
record read "[erased]" while the chain still verifies, and deletes their login history
and known IPs (plain tables, not part of the chain). The database is then asked to
forget the old bytes: SQLite's secure_delete and a WAL checkpoint, PostgreSQL's VACUUM.
The erasure is recorded in the trail by subject id, never by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import delete, func, select

from gateway.audit.entry import AuditEntry, admin_entry
from gateway.audit.keys import AuditKeys
from gateway.audit.sql import write_transaction
from gateway.audit.subjects import SubjectKeys
from gateway.db import Database, audit_records, known_ips, login_history, users

log = structlog.get_logger("gateway.audit.erasure")


@dataclass(frozen=True, slots=True)
class ErasureResult:
    subject_id: str | None
    records: int
    login_history: int
    known_ips: int

    def entry(self, kind: str, operator: str | None) -> AuditEntry:
        return admin_entry(
            "erase", operator=operator, reason=f"erasure of a {kind} subject",
            extra={"subject": self.subject_id, "records": self.records, "login_history": self.login_history,
                   "known_ips": self.known_ips},
        )


async def erase(database: Database, keys: AuditKeys, kind: str, value: str) -> ErasureResult:
    """`kind` is "user" (a normalised user name) or "ip" (a client address)."""
    subjects = SubjectKeys(keys)
    history = addresses = records = 0
    async with write_transaction(database) as conn:
        if database.dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA secure_delete = ON")
        subject_id = await subjects.erase(conn, kind, value)
        if subject_id is not None:
            records = (
                await conn.execute(select(func.count()).select_from(audit_records).where(audit_records.c.subject == subject_id))
            ).scalar_one()
        if kind == "user":
            history = (await conn.execute(delete(login_history).where(login_history.c.username == value))).rowcount
            user_ids = select(users.c.id).where(users.c.name == value).scalar_subquery()
            addresses = (await conn.execute(delete(known_ips).where(known_ips.c.user_id == user_ids))).rowcount
    await _forget_old_bytes(database)
    return ErasureResult(subject_id, int(records), history, addresses)


async def _forget_old_bytes(database: Database) -> None:
    try:
        async with database.engine.connect() as conn:
            if database.dialect == "sqlite":
                # Outside any transaction (SQLAlchemy would BEGIN first): the raw connection.
                raw = await conn.get_raw_connection()
                cursor = await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                await cursor.close()
            else:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("VACUUM subject_keys")
    except Exception as exc:  # best effort: the key is already unusable
        log.warning("could not compact the database after erasure", error=str(exc))
