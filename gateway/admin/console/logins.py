"""Login history (new addresses flagged red, click an address for its history) and known
IPs (forgotten with `forget_known_ip`, a reason asked, audited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from gateway.admin.console import auth
from gateway.admin.console.render import (
    CONSOLE, PAGE_SIZE, Screen, Table, Translator, keyset_page, language, nav, page_of, screen_response,
)
from gateway.audit.known_ips import forget as forget_known_ip
from gateway.audit.known_ips import list_known
from gateway.audit.logins import recent_logins
from gateway.pages.render import see_other

OUTCOMES = ["success", "failure", "locked_out", "refused", "second_factor_failed", "enrolled"]


def place(city: str | None, country: str | None, asn: int | None = None) -> str:
    return ", ".join(p for p in (city, country, f"AS{asn}" if asn else None) if p)


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    clock, q = console.time(), request.query
    screen = Screen("logins", filters=[
        {"name": "user", "label": "col.user"}, {"name": "ip", "label": "col.ip"},
        {"name": "since", "label": "filter.since", "type": "date"}, {"name": "until", "label": "filter.until", "type": "date"},
        {"name": "outcome", "label": "col.outcome", "type": "select", "options": OUTCOMES},
        {"name": "new_ip", "label": "filter.new_ip_only", "type": "checkbox"},
    ])
    try:
        since, until = clock.parse(q.get("since")), clock.parse(q.get("until"))
    except ValueError:
        since = until = None
        screen.error = "error.bad_date"
    user = console.users.normalise(q["user"]) if q.get("user") else None
    rows = await recent_logins(console.database, user, PAGE_SIZE + 1, ip=q.get("ip") or None, since=since,
                               until=until + timedelta(days=1) if until and len(q["until"]) <= 10 else until,
                               outcome=q.get("outcome") or None, new_ip=True if q.get("new_ip") else None,
                               before=int(q["before"]) if q.get("before", "").isdigit() else None)
    rows = keyset_page(screen, rows)
    t_value = Translator(language(request)).value
    screen.table = Table(["at", "user", "ip", "place", "owner", "login_type", "outcome", "new_ip"], [
        {"at": clock.show(r["at"], seconds=True), "user": {"text": r["username"], "href": f"/logins?user={r['username']}"},
         "ip": {"text": r["ip"], "href": f"/logins?ip={r['ip']}"},
         "place": place(r["city"], r["country"], r["asn"]), "owner": r["owner"] or "",
         "login_type": t_value("login_type", r["login_type"]), "outcome": t_value("outcome", r["outcome"]),
         "new_ip": {"text": t_value("flag", "new"), "flag": True} if r["new_ip"] and r["outcome"] == "success" else ""}
        for r in rows
    ])
    return screen_response(request, screen, nav(request))


async def known_ips_page(request: web.Request, *, notice: str | None = None) -> web.Response:
    console = request.app[CONSOLE]
    clock, q, policy = console.time(), request.query, console.policy()
    keep_for = policy.known_ips.keep_for
    user = console.users.normalise(q["user"]) if q.get("user") else None
    known = await list_known(console.database, keep_for, datetime.now(UTC), user)
    if q.get("ip"):
        known = [k for k in known if q["ip"] in k.ip_prefix]
    shown, has_next = page_of(request, known)
    screen = Screen("known_ips", filters=[{"name": "user", "label": "col.user"}, {"name": "ip", "label": "col.ip"}],
                    has_next=has_next, notice=q.get("done") and "done.forgot")
    screen.table = Table(["user", "ip", "place", "first_seen", "last_seen", "expires"], [
        {"user": k.user, "ip": {"text": k.ip_prefix, "href": f"/logins?ip={k.ip_prefix.split('/')[0]}"},
         "place": place(k.city, k.country), "first_seen": clock.show(k.first_seen), "last_seen": clock.show(k.last_seen),
         "expires": clock.show(k.last_seen + timedelta(seconds=keep_for))}
        for k in shown
    ], [[{"action": "/known-ips/forget", "label": "action.forget", "fields": {"user": k.user, "ip": k.ip_prefix},
          "reason": True, "danger": True}] for k in shown])
    return screen_response(request, screen, nav(request))


async def forget(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await auth.checked_form(console, request)
    await auth.require(console, request, "forget_known_ip")
    user, ip, reason = console.users.normalise(form.get("user", "")), form.get("ip", ""), form.get("reason", "").strip()
    if not reason:
        return see_other(f"/known-ips?user={user}")
    removed = await forget_known_ip(console.database, user, ip, console.policy())
    await auth.audit(console, request, "forget_known_ip", permission="forget_known_ip", reason=reason[:200],
                     identifiers={"user": user, "ip": ip}, removed=len(removed))
    return see_other(f"/known-ips?user={user}&done=1")
