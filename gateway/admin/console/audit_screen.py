"""The audit trail: search by user, time range, decision, path, configured identifier
(`reservation=1003`), address; each record opens whole; `audit verify` on demand.

Every search is bounded in time (default: the last 7 days, shown in the filter so the
link says what was searched): the `at` index then limits what is read, whichever other
filter is given; a path search without a range is refused rather than scanning the trail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select

from gateway.admin.console.render import CONSOLE, PAGE_SIZE, Screen, Table, keyset_page, nav, render, screen_response
from gateway.audit.query import QueryFilter
from gateway.db import audit_records

DEFAULT_RANGE = timedelta(days=7)


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    clock, q = console.time(), request.query
    now = clock.local(console.clock())
    screen = Screen("audit")
    try:
        since = clock.parse(q.get("since")) or (now - DEFAULT_RANGE).replace(second=0, microsecond=0)
        until = clock.parse(q.get("until"))
    except ValueError:
        since, until, screen.error = now - DEFAULT_RANGE, None, "error.bad_date"
    screen.filters = [
        {"name": "user", "label": "col.user"}, {"name": "ip", "label": "col.ip"},
        {"name": "identifier", "label": "filter.identifier"}, {"name": "path", "label": "col.path"},
        {"name": "decision", "label": "col.decision"},
        {"name": "since", "label": "filter.since", "type": "datetime-local", "value": since.strftime("%Y-%m-%dT%H:%M")},
        {"name": "until", "label": "filter.until", "type": "datetime-local"},
    ]
    identifier = None
    if q.get("identifier"):
        name, sep, value = q["identifier"].partition("=")
        if sep:
            identifier = (name.strip(), value.strip())
        else:
            screen.error = "error.identifier"
    if q.get("path") and not q.get("since"):
        screen.error = "error.path_needs_range"
    verify = await _verify(console) if q.get("verify") else None
    screen.extra = {"verify": verify, "verify_href": "/audit?verify=1"}
    rows: list[dict[str, Any]] = []
    if console.reader is not None and screen.error is None:
        filters = QueryFilter(user=console.users.normalise(q["user"]) if q.get("user") else None,
                              ip=q.get("ip") or None, path=q.get("path") or None, identifier=identifier,
                              since=since, until=until, decision=q.get("decision") or None)
        before = int(q["before"]) if q.get("before", "").isdigit() else 0
        rows = [r async for r in console.reader.records(filters, before_id=before, limit=PAGE_SIZE + 1)]
    rows = keyset_page(screen, rows)
    screen.table = Table(["at", "user", "ip", "method", "path", "status", "decision", "identifiers"], [
        {"at": {"text": clock.show(_at(r["at"]), seconds=True), "href": f"/audit/record/{r['id']}"},
         "user": r["user"] or "", "ip": r["client_ip"] or "", "method": r["method"] or "", "path": r["path"] or "",
         "status": r["status"] or "", "decision": r["decision"], "identifiers": cell(r["identifiers"])}
        for r in rows
    ])
    return screen_response(request, screen, nav(request), template="audit.html")


def _at(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


async def _verify(console) -> dict[str, Any]:
    from gateway.audit.heads import heads_path, read_exported_heads
    from gateway.audit.verify import verify_trail

    source = heads_path(console.services.config.data_dir)
    exported = read_exported_heads(source) if source.exists() else []
    report = await verify_trail(console.database, console.services.audit.keys, exported)
    last = exported[-1] if exported else None
    return {"ok": report.ok, "chains": report.chains, "findings": [str(f) for f in report.findings][:20],
            "head": last}


async def record(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    try:
        record_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    async with console.database.connect() as conn:
        row = (await conn.execute(select(audit_records).where(audit_records.c.id == record_id))).first()
        if row is None or console.reader is None:
            raise web.HTTPNotFound()
        fields = await console.reader.decrypt(conn, row)
    fields["at"] = console.time().show(_at(fields["at"]), seconds=True)
    return render(request, "record.html", fields={k: cell(v) for k, v in fields.items()}, record_id=record_id,
                  **nav(request))
