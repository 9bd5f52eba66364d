"""The console's routes on the admin listener, and the one middleware that guards them.

Every answer gets the console's headers (strict CSP, no-store, no framing); every path
but sign-in, enrollment, the stylesheet, /health and /metrics needs a console session.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.admin.console import (
    audit_screen, auth, dashboard, logins, operators_screen, outbound, policy_screen, sessions_screen, support_screen,
    users_screen,
)
from gateway.admin.console.render import CONSOLE, HEADERS, HERE, OPERATOR, SESSION, Clock, nav, render
from gateway.admin.operators import OperatorDirectory
from gateway.audit.query import AuditReader
from gateway.auth.support import SupportAccess
from gateway.pages.render import see_other
from gateway.risk.lockout import Lockouts
from gateway.sessions.manager import SessionManager

PUBLIC = frozenset({"/login", "/enroll", "/health", "/metrics"})  # exact paths: /logins is not /login


@dataclass
class Console:
    """What the screens use: the gateway process's own services, not copies."""

    services: Any  # gateway.assembly.Services
    tls: bool
    clock: Callable[[], float] = time.time
    operators: OperatorDirectory = field(init=False)
    sessions: SessionManager = field(init=False)
    lockouts: Lockouts = field(init=False)
    support: SupportAccess = field(init=False)
    reader: AuditReader | None = field(init=False)
    csrf_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        s = self.services
        self.operators = OperatorDirectory(s.database, s.keyring, s.store, clock=self.clock)
        self.sessions = SessionManager(s.store, s.keyring, s.policy, clock=self.clock)
        self.lockouts = Lockouts(s.store, s.policy, clock=self.clock)
        audit = s.audit
        self.support = SupportAccess(s.database, s.keyring, s.policy, s.users,
                                     audit.login_history if audit else None, audit.alerter if audit else None,
                                     clock=self.clock)
        self.reader = AuditReader(s.database, audit.keys) if audit else None
        self.csrf_key = s.keyring.derive("console-csrf")

    @property
    def store(self):
        return self.services.store

    @property
    def database(self):
        return self.services.database

    @property
    def users(self):
        return self.services.users

    @property
    def writer(self):
        return self.services.audit.writer if self.services.audit else None

    def policy(self):
        return self.services.policy()

    def time(self) -> Clock:
        return Clock(self.policy().property_timezone)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console: Console = request.app[CONSOLE]
    if request.path not in PUBLIC and not request.path.startswith("/static/"):
        found = await auth.current(console, request)
        if found is None:
            response: web.StreamResponse = see_other("/login?ended=1" if auth.single_cookie(
                request, auth.cookie_name(console)) else "/login")
            response.headers.update(HEADERS)
            return response
        request[SESSION], request[OPERATOR] = found
    try:
        response = await handler(request)
    except auth.StepUpFailed:
        response = render(request, "message.html", status=403, title="error.step_up", text="error.step_up_text",
                          **nav(request))
    except web.HTTPForbidden as exc:
        response = render(request, "message.html", status=403, title="error.forbidden",
                          text="error.csrf" if "CSRF" in (exc.text or "") else "error.forbidden_text", **nav(request))
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    response.headers.update({k: v for k, v in HEADERS.items() if k not in response.headers})
    return response


def add_console(app: web.Application, services: Any, *, tls: bool, clock: Callable[[], float] = time.time) -> None:
    app[CONSOLE] = Console(services, tls, clock)
    app.middlewares.append(guard)
    r = app.router
    r.add_get("/login", auth.login_page)
    r.add_post("/login", auth.login_submit)
    r.add_get("/enroll", auth.enroll_page)
    r.add_post("/enroll", auth.enroll_submit)
    r.add_post("/logout", auth.logout)
    r.add_static("/static/", HERE / "static", append_version=False)
    r.add_get("/", dashboard.page)
    r.add_get("/logins", logins.page)
    r.add_get("/known-ips", logins.known_ips_page)
    r.add_post("/known-ips/forget", logins.forget)
    r.add_get("/sessions", sessions_screen.page)
    r.add_post("/sessions/revoke", sessions_screen.revoke)
    r.add_get("/users", users_screen.page)
    r.add_post("/users/{action}", users_screen.act)
    r.add_get("/audit", audit_screen.page)
    r.add_get("/audit/record/{id}", audit_screen.record)
    r.add_get("/support", support_screen.page)
    r.add_post("/support/{action}", support_screen.act)
    r.add_get("/outbound", outbound.page)
    r.add_get("/policy", policy_screen.page)
    r.add_get("/operators", operators_screen.page)
    r.add_post("/operators/{action}", operators_screen.act)
