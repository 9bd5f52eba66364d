"""Appending entries to an instance's chain in the database, exactly once.

One transaction per batch: lock the chain head (an UPDATE ... RETURNING, which takes the
row lock on PostgreSQL and the write lock on SQLite, so several processes sharing an
instance id still build one unbroken chain), encrypt personal fields, compute the MACs,
insert, move the head. Replayed batches are first checked against the records already
stored (by request id), so a batch whose commit was acknowledged too late to be believed
is never stored twice.
"""

from __future__ import annotations

import asyncio

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import CHAINED_FIELDS, genesis, values_mac
from gateway.audit.entry import AuditEntry
from gateway.audit.keys import AuditKeys
from gateway.audit.sql import insert_or_ignore
from gateway.audit.subjects import SubjectCipher, SubjectKeys
from gateway.db import Database, audit_chain_heads, audit_records, utcnow

TAG_CHARS = 16
SEALED_CACHE = 20_000
_COLUMNS = (*CHAINED_FIELDS, "prev_mac", "mac")
_SQL = {
    # Through the driver: SQLAlchemy's per-row parameter processing costs more than the
    # rest of writing a record. Values are already in the backend's own types.
    "sqlite": f"INSERT INTO audit_records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
    "postgresql": f"INSERT INTO audit_records ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})",
}
_AT = CHAINED_FIELDS.index("at")


@dataclass(frozen=True, slots=True)
class ChainHead:
    instance_id: str
    seq: int
    mac: str


def subject_of(entry: AuditEntry) -> tuple[str, str] | None:
    """Whose personal data the entry holds: the signed-in user, else the client address."""
    if entry.user:
        return "user", entry.user
    if entry.client_ip:
        return "ip", entry.client_ip
    return None


@lru_cache(maxsize=8192)
def _tag(key: bytes, kind: str, value: str) -> str:
    return hmac.digest(key, f"{kind}:{value}".encode(), "sha256").hex()[:TAG_CHARS]


class TagMaker:
    """Keyed hashes of the client IP and identifiers, so `audit query --ip/--identifier`
    can filter in SQL without decrypting every record."""

    def __init__(self, keys: AuditKeys) -> None:
        self._key = keys.index

    def tag(self, kind: str, value: str) -> str:
        return _tag(self._key, kind, value)

    def tags_for(self, entry: AuditEntry) -> str:
        tags = []
        if entry.client_ip:
            tags.append(self.tag("ip", entry.client_ip))
        tags.extend(self.tag("id", f"{name}={value}") for name, value in sorted(entry.identifiers.items()))
        return f" {' '.join(tags)} " if tags else ""


# Sealing and chaining a record costs tens of microseconds; a batch of 500 done in one go
# stalled every request behind it by tens of milliseconds (measured in bench/).
YIELD_EVERY = 32


class AuditStore:
    def __init__(self, database: Database, keys: AuditKeys, subjects: SubjectKeys | None = None) -> None:
        self.database = database
        self.keys = keys
        self.subjects = subjects or SubjectKeys(keys)
        self.tags = TagMaker(keys)
        self._sealed: dict[tuple[str, str, str], str] = {}

    async def append(self, entries: Sequence[AuditEntry], instance_id: str, *, dedupe: bool = False) -> ChainHead | None:
        """Chain and insert `entries` in one transaction; returns the new head (None if all
        were already stored)."""
        fetched: dict[str, SubjectCipher] = {}
        async with self.database.begin() as conn:
            seq, mac = await lock_head(conn, instance_id, self.keys.chain)
            if dedupe:
                entries = await self._not_yet_stored(conn, entries, instance_id)
            if not entries:
                return None
            lookups = {self.subjects.lookup(*s) for e in entries if (s := subject_of(e)) is not None}
            ciphers, fetched = await self.subjects.ciphers_for(conn, lookups)
            rows = []
            for index, entry in enumerate(entries, 1):
                if index % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let requests run: a big batch must not stall the loop
                seq += 1
                values = self._values(entry, instance_id, seq, ciphers)
                prev, mac = mac, values_mac(self.keys.chain, mac, values)
                values += (prev, mac)
                rows.append(values)
            await _insert(conn, rows)
            await conn.execute(
                update(audit_chain_heads)
                .where(audit_chain_heads.c.instance_id == instance_id)
                .values(seq=seq, mac=mac, updated_at=utcnow())
            )
        self.subjects.remember(fetched)
        return ChainHead(instance_id, seq, mac)

    async def _not_yet_stored(
        self, conn: AsyncConnection, entries: Sequence[AuditEntry], instance_id: str
    ) -> list[AuditEntry]:
        ids = [e.request_id for e in entries]
        stored = set(
            (
                await conn.execute(
                    select(audit_records.c.request_id).where(
                        audit_records.c.instance_id == instance_id, audit_records.c.request_id.in_(ids)
                    )
                )
            ).scalars()
        )
        return [e for e in entries if e.request_id not in stored]

    def _values(self, entry: AuditEntry, instance_id: str, seq: int, ciphers: dict[str, SubjectCipher]) -> list[Any]:
        """The record's stored values in CHAINED_FIELDS order, personal fields sealed."""
        subject = subject_of(entry)
        cipher = ciphers[self.subjects.lookup(*subject)] if subject is not None else None

        def seal(field: str, value: str | None) -> str | None:
            if value is None or cipher is None:
                return value
            # One ciphertext per (subject, field, value) is reused: equal values are
            # visible anyway (same subject, same tag), and it spares most of the AES work.
            key = (cipher.subject_id, field, value)
            sealed = self._sealed.get(key)
            if sealed is None:
                if len(self._sealed) >= SEALED_CACHE:
                    self._sealed.clear()
                sealed = self._sealed[key] = cipher.encrypt(field, value)
            return sealed

        identifiers = "{}"
        if entry.identifiers:
            identifiers = seal("identifiers", json.dumps(entry.identifiers, ensure_ascii=False, sort_keys=True)) or "{}"
        upstream = entry.upstream_ms
        return [  # CHAINED_FIELDS order
            instance_id,
            seq,
            datetime.fromtimestamp(entry.at, UTC),
            entry.request_id,
            seal("user_name", entry.user),
            entry.session_hash,
            entry.device_id,
            seal("client_ip", entry.client_ip),
            entry.country,
            entry.city,
            entry.asn,
            entry.method,
            entry.path,
            entry.query,
            entry.status,
            entry.bytes_in,
            entry.bytes_out,
            round(float(entry.duration_ms), 3),
            None if upstream is None else round(float(upstream), 3),
            entry.decision,
            entry.reason,
            identifiers,
            entry.channel,
            json.dumps(entry.extra, ensure_ascii=False, sort_keys=True) if entry.extra else "{}",
            None if cipher is None else cipher.subject_id,
            self.tags.tags_for(entry),
        ]


async def lock_head(conn: AsyncConnection, instance_id: str, chain_key: bytes) -> tuple[int, str]:
    """(seq, mac) of the instance's head, locked until the transaction ends; created at
    (0, genesis) for a new instance."""
    statement = (
        update(audit_chain_heads)
        .where(audit_chain_heads.c.instance_id == instance_id)
        .values(updated_at=utcnow())
        .returning(audit_chain_heads.c.seq, audit_chain_heads.c.mac)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        await conn.execute(
            insert_or_ignore(conn.dialect.name, audit_chain_heads, ["instance_id"]),
            [{"instance_id": instance_id, "seq": 0, "mac": genesis(chain_key, instance_id), "updated_at": utcnow()}],
        )
        row = (await conn.execute(statement)).one()
    return int(row.seq), str(row.mac)


async def read_heads(database: Database) -> list[ChainHead]:
    async with database.connect() as conn:
        rows = await conn.execute(select(audit_chain_heads).order_by(audit_chain_heads.c.instance_id))
        return [ChainHead(r.instance_id, int(r.seq), r.mac) for r in rows]


async def _insert(conn: AsyncConnection, rows: list[list[Any]]) -> None:
    """Insert rows given as values in _COLUMNS order."""
    dialect = conn.dialect.name
    if dialect not in _SQL or conn.dialect.driver not in ("aiosqlite", "asyncpg"):
        await conn.execute(insert(audit_records), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
        return
    if dialect == "sqlite":  # UTCDateTime's SQLite storage: naive UTC text, microseconds
        for row in rows:
            at = row[_AT]
            row[_AT] = f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond:06d}"
    await conn.exec_driver_sql(_SQL[dialect], [tuple(row) for row in rows])
