"""Reading the trail back: filters, decryption of personal fields, paging.

Filters on plain columns (time, decision, path prefix) run in SQL. Personal fields are
ciphertext, so `--user` selects the user's subject, and `--ip`/`--identifier` match the
keyed tags stored beside each record; every candidate is then decrypted and compared
exactly. Fields whose subject key was erased read "[erased]".

Newest first (the console) is time order, (at, id) descending, resumed below a record
(keyset, never OFFSET): the (at, id), (subject, at, id) and rare-decision indexes then
hand over the newest matches of a range at once, on tens of millions of records. On
PostgreSQL a tag is matched exactly in the GIN index of the tag list (migration 8);
SQLite, the small single-instance store, matches it with LIKE.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
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


def tag_list(tags: Any) -> Any:
    """PostgreSQL: the record's tags as an array, the expression its GIN index is on."""
    return func.string_to_array(func.btrim(tags), literal_column("' '"))  # a constant, as in the index


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
        """Matching records, oldest first by id, decrypted; `after_id` resumes (for tail -f).
        With `before_id` (0 = from the newest) newest first by time instead, after record
        `before_id` in that order (console paging)."""
        produced = 0
        newest_first = before_id is not None
        c = audit_records.c
        size = PAGE if limit is None else max(min(PAGE, limit), 1)  # a LIMIT the planner can use
        async with self.database.connect() as conn:
            statement = await self._statement(conn, filters)
            if statement is None:
                return
            cursor: Any = after_id
            if newest_first:
                statement = statement.order_by(None).order_by(c.at.desc(), c.id.desc())
                cursor = None
                if before_id:
                    at = (await conn.execute(select(c.at).where(c.id == before_id))).scalar()
                    if at is None:
                        return
                    cursor = (at, before_id)
            regex = filters.path_regex
            while True:
                if newest_first:
                    paged = statement if cursor is None else statement.where(tuple_(c.at, c.id) < tuple_(
                        literal(cursor[0], c.at.type), literal(cursor[1], c.id.type)))
                else:
                    paged = statement.where(c.id > cursor)
                page = (await conn.execute(paged.limit(size))).all()
                for row in page:
                    cursor = (row.at, row.id) if newest_first else row.id
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
                if len(page) < size:
                    return
                size = PAGE

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
            if self.database.dialect == "postgresql" and f.path and f.path[-1] < "\U0010ffff":
                # The same prefix as a range of the text_pattern_ops index (byte order), which
                # a prepared statement's generic plan can use where LIKE ... ESCAPE is opaque.
                upper = f.path[:-1] + chr(ord(f.path[-1]) + 1)
                statement = statement.where(c.path.op("~>=~")(f.path), c.path.op("~<~")(upper))
        if f.user is not None:
            subject = await self.subjects.subject_id(conn, "user", f.user)
            if subject is None:
                return None  # never seen, or erased
            statement = statement.where(c.subject == subject, c.user_name.is_not(None))
        if f.ip is not None:
            statement = statement.where(self._has_tag(self.tags.tag("ip", f.ip)))
        if f.identifier is not None:
            name, value = f.identifier
            statement = statement.where(self._has_tag(self.tags.tag("id", f"{name}={value}")))
        return statement

    def _has_tag(self, tag: str) -> Any:
        """The record carries `tag`: on PostgreSQL through the GIN index of the tag list
        (the expression of migration 8, spelled identically), elsewhere a LIKE."""
        if self.database.dialect == "postgresql":
            return tag_list(audit_records.c.tags).op("@>")(literal([tag], ARRAY(audit_records.c.tags.type)))
        return audit_records.c.tags.like(f"% {tag} %")

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

    async def estimated_total(self) -> int:
        """About how many records the trail holds, without counting them (an exact count
        reads every row: minutes on a busy year): PostgreSQL's own estimate, kept by
        (auto)ANALYZE; elsewhere, or before any ANALYZE, the span of ids (two index reads;
        purged or replayed ranges make it an estimate too)."""
        async with self.database.connect() as conn:
            if self.database.dialect == "postgresql":
                estimate = (await conn.exec_driver_sql(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = 'audit_records'::regclass")).scalar()
                if estimate is not None and estimate >= 0:
                    return int(estimate)
            c = audit_records.c
            low, high = (await conn.execute(select(func.min(c.id), func.max(c.id)))).one()
        return 0 if high is None else int(high) - int(low) + 1

    async def last_id(self) -> int:
        async with self.database.connect() as conn:
            value = (await conn.execute(select(audit_records.c.id).order_by(audit_records.c.id.desc()).limit(1))).scalar()
        return int(value or 0)
