"""Outbound notifications: what the SMTP relay and the egress proxy forwarded, redacted,
blocked, deferred or held (detector counts, never the values: the trail holds none), and
the mail held for the operator."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import func, select

from gateway.admin.console.audit_screen import _at
from gateway.admin.console.render import CONSOLE, PAGE_SIZE, Screen, Table, keyset_page, nav, screen_response
from gateway.audit.query import QueryFilter
from gateway.db import audit_records


def start_of_today(console) -> datetime:
    local = console.time().local(console.clock())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


async def counts_today(console) -> dict[str, int]:
    """Outbound records since local midnight by action, plus `redacted` (forwarded with any
    detector hit): one day of the `at` index."""
    since = start_of_today(console)
    c = audit_records.c
    async with console.database.connect() as conn:
        rows = (await conn.execute(select(c.decision, func.count()).where(c.at >= since, c.channel == "outbound")
                                   .group_by(c.decision))).all()
        redacted = (await conn.execute(select(func.count()).where(
            c.at >= since, c.channel == "outbound", c.extra.like('%"detectors": {"%')))).scalar() or 0
    counts = {decision: int(n) for decision, n in rows}
    counts["redacted"] = int(redacted)
    return counts


def held_count(console) -> int:
    from gateway.redact.hold_queue import HoldQueue, hold_dir

    return len(HoldQueue(hold_dir(console.services.config.data_dir), console.services.keyring).ids())


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    clock, q = console.time(), request.query
    screen = Screen("outbound", filters=[
        {"name": "decision", "label": "col.action", "type": "select",
         "options": ["forwarded", "blocked", "refused", "deferred", "held"]},
        {"name": "since", "label": "filter.since", "type": "date"}])
    try:
        since = clock.parse(q.get("since")) or start_of_today(console) - timedelta(days=6)
    except ValueError:
        since, screen.error = start_of_today(console), "error.bad_date"
    rows = []
    if console.reader is not None:
        before = int(q["before"]) if q.get("before", "").isdigit() else 0
        rows = [r async for r in console.reader.records(
            QueryFilter(channel="outbound", since=since, decision=q.get("decision") or None),
            before_id=before, limit=PAGE_SIZE + 1)]
    rows = keyset_page(screen, rows)
    counts = await counts_today(console)
    screen.notice, screen.notice_values = "outbound.today", {
        "redacted": counts.get("redacted", 0), "blocked": counts.get("blocked", 0),
        "deferred": counts.get("deferred", 0), "held": held_count(console)}
    screen.table = Table(["at", "channel", "destination", "action", "detectors", "reason"], [
        {"at": clock.show(_at(r["at"]), seconds=True), "channel": r["method"] or "", "destination": r["path"] or "",
         "action": r["decision"], "reason": r["reason"] or "",
         "detectors": ", ".join(f"{k}: {v}" for k, v in (r["extra"] or {}).get("detectors", {}).items())}
        for r in rows
    ])
    return screen_response(request, screen, nav(request))
