"""Live sessions per user and device; revoke one, or all of a user (`manage_sessions`).
The revoked browser meets the gateway's "signed out" at its next request."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.console import auth
from gateway.admin.console.logins import place
from gateway.admin.console.render import CONSOLE, Screen, Table, nav, page_of, screen_response
from gateway.pages.render import see_other
from gateway.sessions.model import device_label


async def live_sessions(console, user: str | None = None) -> list:
    manager = console.sessions
    if user is not None:
        return await manager.sessions_of(user)
    found = [await manager.load(h) for h in await manager.store.set_members("sess-all")]
    return sorted((s for s in found if s is not None), key=lambda s: s.created)


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    clock, q, policy = console.time(), request.query, console.policy()
    user = console.users.normalise(q["user"]) if q.get("user") else None
    sessions = await live_sessions(console, user)
    shown, has_next = page_of(request, sessions)
    geo = console.services.audit.geo if console.services.audit else None
    now = console.clock()

    def where(ip: str) -> str:
        info = geo.lookup(ip) if geo is not None else None
        return place(info.city, info.country, info.asn) if info is not None else ""

    screen = Screen("sessions", filters=[{"name": "user", "label": "col.user"}],
                    has_next=has_next, notice=q.get("done") and "done.revoked",
                    notice_values={"n": q.get("done", "0")})
    screen.table = Table(["user", "device", "ip", "place", "browser", "started", "last_active", "idle_left"], [
        {"user": {"text": s.user, "href": f"/sessions?user={s.user}"}, "device": device_label(s.device_id),
         "ip": {"text": s.ip, "href": f"/logins?ip={s.ip}"}, "place": where(s.ip), "browser": s.user_agent[:120],
         "started": clock.show(s.created), "last_active": clock.show(s.last_active),
         "idle_left": f"{max(0, int(policy.sessions_for(s.group).idle_timeout - (now - s.last_active))) // 60} min"}
        for s in shown
    ], [[{"action": "/sessions/revoke", "label": "action.revoke", "fields": {"session": s.id_hash}, "danger": True},
         {"action": "/sessions/revoke", "label": "action.revoke_all", "fields": {"user": s.user}, "danger": True}]
        for s in shown])
    return screen_response(request, screen, nav(request))


async def revoke(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await auth.checked_form(console, request)
    await auth.require(console, request, "manage_sessions")
    if form.get("user"):
        user = console.users.normalise(form["user"])
        ended = await console.sessions.end_user(user, "revoked")
        await auth.audit(console, request, "session_revoke_all", permission="manage_sessions",
                         identifiers={"user": user}, ended=ended)
        return see_other(f"/sessions?done={ended}")
    session = await console.sessions.load(form.get("session", ""))
    ended = 0
    if session is not None and await console.sessions.end(session, "revoked"):
        ended = 1
        await auth.audit(console, request, "session_revoke", permission="manage_sessions",
                         identifiers={"user": session.user}, session_hash=session.id_hash[:16])
    return see_other(f"/sessions?done={ended}")
