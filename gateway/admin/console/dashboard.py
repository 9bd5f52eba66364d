"""The dashboard: logins and failures per hour for 7 days (an SVG drawn here: no script),
sessions and lockouts now, new-address logins today, the audit writer's queue and spool,
the last policy reload and today's outbound counts."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from markupsafe import Markup, escape
from sqlalchemy import func, select

from gateway.admin.console.outbound import counts_today, held_count, start_of_today
from gateway.admin.console.render import CONSOLE, Translator, language, nav, render
from gateway.db import login_history

HOURS = 7 * 24


async def hourly(console, now: datetime) -> tuple[list[int], list[int], datetime]:
    """Successful and failed logins per hour over the last 7 days (the `at` index)."""
    start = (now - timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    c = login_history.c
    ok, failed = [0] * HOURS, [0] * HOURS
    async with console.database.connect() as conn:
        rows = await conn.execute(select(c.at, c.outcome).where(c.at >= start))
        for at, outcome in rows:
            index = int((at - start).total_seconds() // 3600)
            if 0 <= index < HOURS:
                (ok if outcome == "success" else failed)[index] += outcome in ("success", "failure", "locked_out",
                                                                              "second_factor_failed", "refused")
    return ok, failed, start


def chart(ok: list[int], failed: list[int], start: datetime, t: Translator) -> Markup:
    """Bars per hour, logins up and failures stacked above, a day label every 24 hours."""
    width, height, top = 3 * HOURS + 40, 160, max([a + b for a, b in zip(ok, failed, strict=True)] + [1])
    scale = (height - 30) / top
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(t("dash.chart"))}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<line class="axis" x1="30" y1="{height - 20}" x2="{width}" y2="{height - 20}"/>',
             f'<text x="2" y="12">{top}</text>']
    for i, (good, bad) in enumerate(zip(ok, failed, strict=True)):
        x, base = 32 + 3 * i, height - 20
        if good:
            parts.append(f'<rect class="logins" x="{x}" y="{base - good * scale:.1f}" width="2" height="{good * scale:.1f}"/>')
        if bad:
            parts.append(f'<rect class="failures" x="{x}" y="{base - (good + bad) * scale:.1f}" width="2" '
                         f'height="{bad * scale:.1f}"/>')
        if (start + timedelta(hours=i)).hour == 0:
            parts.append(f'<line class="axis" x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}"/>'
                         f'<text x="{x + 2}" y="{height - 6}">{(start + timedelta(hours=i)).strftime("%d.%m")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    clock, t = console.time(), Translator(language(request))
    now = clock.local(console.clock())
    ok, failed, start = await hourly(console, now)
    sessions = len(await console.store.set_members("sess-all"))
    users = await console.users.list()
    lockouts = sum([await console.lockouts.locked(u.name) for u in users])
    c = login_history.c
    async with console.database.connect() as conn:
        new_ip = (await conn.execute(select(func.count()).where(
            c.at >= start_of_today(console), c.new_ip.is_(True), c.outcome == "success"))).scalar() or 0
    writer = console.writer
    spool = 0
    if writer is not None:
        import asyncio

        spool = await asyncio.to_thread(writer.spool.count_lines)
    holder = console.services.policy
    outbound = await counts_today(console)
    stats = [
        ("dash.sessions", sessions, "/sessions"), ("dash.lockouts", lockouts, "/users"),
        ("dash.new_ip_today", new_ip, "/logins?new_ip=1&since=" + start_of_today(console).strftime("%Y-%m-%d")),
        ("dash.logins_7d", sum(ok), "/logins"), ("dash.failures_7d", sum(failed), "/logins?outcome=failure"),
        ("dash.audit_queue", writer.queued if writer else 0, "/audit"), ("dash.spool", spool, "/audit"),
        ("dash.audit_records", t("about", n=f"{await console.reader.estimated_total():,}") if console.reader else 0,
         "/audit"),
        ("dash.redacted_today", outbound.get("redacted", 0), "/outbound"),
        ("dash.blocked_today", outbound.get("blocked", 0), "/outbound?decision=blocked"),
        ("dash.deferred_today", outbound.get("deferred", 0), "/outbound?decision=deferred"),
        ("dash.held", held_count(console), "/outbound?decision=held"),
    ]
    return render(request, "dashboard.html", chart=chart(ok, failed, start, t), stats=stats,
                  reload_at=clock.show(getattr(holder, "loaded_at", None)),
                  rejection=getattr(holder, "last_rejection", None), **nav(request))
