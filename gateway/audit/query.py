"""Reading the trail back: filters, decryption of personal fields, paging.

Filters on plain columns (time, decision, path prefix) run in SQL. Personal fields are
ciphertext, so `--user` selects the user's subject, and `--ip`/`--identifier` match the
keyed tags stored beside each record; every candidate is then decrypted and compared
exactly. Fields whose subject key was erased read "[erased]".
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.keys import AuditKeys
from gateway.audit.store import TagMaker
from gateway.audit.subjects import ERASED, SubjectKeys, is_ciphertext
from gateway.db import Database, audit_records

PAGE = 1000

OUTPUT_FIELDS: tuple[str, ...] = (
    "instance_id", "seq", "at", "request_id", "user", "client_ip", "country", "city", "asn", "method",
    "path", "query", "status", "decision", "reason", "identifiers", "bytes_in", "bytes_out", "duration_ms",
    "upstream_ms", "session_hash", "device_id", "channel", "extra",
)


@dataclass(frozen=True, slots=True)
class QueryFilter:
    user: str | None = None
    ip: str | None = None
    path: str | None = None  # a prefix, or "re:REGEX"
    identifier: tuple[str, str] | None = None  # (name, value)
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    instance_id: str | None = None
    channel: str | None = None  # http | admin | outbound

    @property
    def path_regex(self) -> re.Pattern[str] | None:
        if self.path is not None and self.path.startswith("re:"):
            return re.compile(self.path[3:])
        return None


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AuditReader:
    def __init__(self, database: Database, keys: AuditKeys) -> None:
        self.database = database
        self.subjects = SubjectKeys(keys)
        self.tags = TagMaker(keys)

    async def records(
        self, filters: QueryFilter = QueryFilter(), *, after_id: int = 0, limit: int | None = None,
        before_id: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Matching records, oldest first, decrypted; `after_id` resumes (for tail -f). With
        `before_id` (0 = from the newest) newest first instead, below that id (console paging)."""
        produced = 0
        newest_first = before_id is not None
        cursor = (before_id or 2**62) if newest_first else after_id
        async with self.database.connect() as conn:
            statement = await self._statement(conn, filters)
            if statement is None:
                return
            if newest_first:
                statement = statement.order_by(None).order_by(audit_records.c.id.desc())
            regex = filters.path_regex
            while True:
                bound = audit_records.c.id < cursor if newest_first else audit_records.c.id > cursor
                page = (await conn.execute(statement.where(bound).limit(PAGE))).all()
                for row in page:
                    cursor = row.id
                    if regex is not None and not (row.path and regex.search(row.path)):
                        continue
                    record = await self.decrypt(conn, row)
                    if not self._matches(record, filters):
                        continue
                    record["id"] = row.id
                    yield record
                    produced += 1
                    if limit is not None and produced >= limit:
                        return
                if len(page) < PAGE:
                    return

    async def _statement(self, conn: AsyncConnection, f: QueryFilter) -> Select[Any] | None:
        c = audit_records.c
        statement = select(audit_records).order_by(c.id)
        if f.instance_id is not None:
            statement = statement.where(c.instance_id == f.instance_id)
        if f.since is not None:
            statement = statement.where(c.at >= f.since)
        if f.until is not None:
            statement = statement.where(c.at < f.until)
        if f.decision is not None:
            statement = statement.where(c.decision == f.decision)
        if f.channel is not None:
            statement = statement.where(c.channel == f.channel)
        if f.path is not None and f.path_regex is None:
            statement = statement.where(c.path.like(_like_escape(f.path) + "%", escape="\\"))
        if f.user is not None:
            subject = await self.subjects.subject_id(conn, "user", f.user)
            if subject is None:
                return None  # never seen, or erased
            statement = statement.where(c.subject == subject, c.user_name.is_not(None))
        if f.ip is not None:
            statement = statement.where(c.tags.like(f"% {self.tags.tag('ip', f.ip)} %"))
        if f.identifier is not None:
            name, value = f.identifier
            statement = statement.where(c.tags.like(f"% {self.tags.tag('id', f'{name}={value}')} %"))
        return statement

    @staticmethod
    def _matches(record: dict[str, Any], f: QueryFilter) -> bool:
        if f.user is not None and record["user"] != f.user:
            return False
        if f.ip is not None and record["client_ip"] != f.ip:
            return False
        if f.identifier is not None:
            identifiers = record["identifiers"]
            if not isinstance(identifiers, dict) or identifiers.get(f.identifier[0]) != f.identifier[1]:
                return False
        return True

    async def decrypt(self, conn: AsyncConnection, row: Row[Any]) -> dict[str, Any]:
        cipher = await self.subjects.cipher_by_id(conn, row.subject) if row.subject else None

        def clear(field: str, value: str | None) -> str | None:
            if not is_ciphertext(value):
                return value
            return ERASED if cipher is None else cipher.decrypt(field, value)

        identifiers_text = clear("identifiers", row.identifiers)
        try:
            identifiers: Any = json.loads(identifiers_text) if identifiers_text else {}
        except ValueError:
            identifiers = identifiers_text  # "[erased]" or "[unreadable]"
        try:
            extra = json.loads(row.extra) if row.extra else {}
        except ValueError:
            extra = row.extra
        return {
            "instance_id": row.instance_id,
            "seq": row.seq,
            "at": row.at.isoformat(timespec="milliseconds"),
            "request_id": row.request_id,
            "user": clear("user_name", row.user_name),
            "client_ip": clear("client_ip", row.client_ip),
            "country": row.country,
            "city": row.city,
            "asn": row.asn,
            "method": row.method,
            "path": row.path,
            "query": row.query,
            "status": row.status,
            "decision": row.decision,
            "reason": row.reason,
            "identifiers": identifiers,
            "bytes_in": row.bytes_in,
            "bytes_out": row.bytes_out,
            "duration_ms": row.duration_ms,
            "upstream_ms": row.upstream_ms,
            "session_hash": row.session_hash,
            "device_id": row.device_id,
            "channel": row.channel,
            "extra": extra,
        }

    async def last_id(self) -> int:
        async with self.database.connect() as conn:
            value = (await conn.execute(select(audit_records.c.id).order_by(audit_records.c.id.desc()).limit(1))).scalar()
        return int(value or 0)
