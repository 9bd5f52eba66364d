"""Who is at the console: operator sign-in (password and TOTP), console sessions, CSRF,
permissions and the second factor asked again.

Sessions live in the ephemeral store under a hash of a random cookie value: idle 15 min,
absolute 8 h, and ended when the operator's `generation` moves (permissions or factors
changed, operator removed). The cookie is `__Host-gw_console` over TLS; browsers refuse
that prefix on plain http, so on the loopback default it is `gw_console`. A request that
carries the console cookie more than once (the PMS on the same host name set one for a
parent `Domain=` or its own path) is not honoured: it has no session. The sign-in form
carries a CSRF token bound to a pre-session cookie; every form afterwards the session's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin.console.render import CONSOLE, OPERATOR, SESSION, render
from gateway.audit.entry import admin_entry
from gateway.pages.render import see_other
from gateway.sessions.cookies import CONSOLE_COOKIE, CONSOLE_PRE_COOKIE

if TYPE_CHECKING:
    from gateway.admin.console.app import Console
    from gateway.admin.operators import Operator

IDLE = 15 * 60.0
ABSOLUTE = 8 * 3600.0
PRE_COOKIE = CONSOLE_PRE_COOKIE
SESSION_KEY = "console:sess:"


@dataclass
class ConsoleSession:
    operator: str
    generation: int
    created: float
    last: float
    csrf: str


def cookie_name(console: Console) -> str:
    return "__Host-" + CONSOLE_COOKIE if console.tls else CONSOLE_COOKIE


def single_cookie(request: web.Request, name: str) -> str | None:
    """The cookie's value when the request carries it exactly once; None otherwise."""
    values = []
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                values.append(value)
    return values[0] if len(values) == 1 else None


def _key(token: str) -> str:
    return SESSION_KEY + hashlib.sha256(token.encode()).hexdigest()


def set_cookie(console: Console, response: web.StreamResponse, name: str, value: str, max_age: float | None) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="Strict", secure=console.tls,
                        max_age=None if max_age is None else int(max_age))


async def open_session(console: Console, operator: Operator, response: web.StreamResponse) -> None:
    token = secrets.token_urlsafe(32)
    now = console.clock()
    session = ConsoleSession(operator.name, operator.generation, now, now, secrets.token_urlsafe(24))
    await console.store.set(_key(token), json.dumps(asdict(session)).encode(), ttl=IDLE)
    set_cookie(console, response, cookie_name(console), token, ABSOLUTE)


async def current(console: Console, request: web.Request) -> tuple[ConsoleSession, Operator] | None:
    """The live session and its operator, touched; None (and the session ended) past the idle
    or absolute limit or when the operator changed."""
    token = single_cookie(request, cookie_name(console))
    if not token:
        return None
    key = _key(token)
    raw = await console.store.get(key)
    if raw is None:
        return None
    session = ConsoleSession(**json.loads(raw))
    now = console.clock()
    operator = await console.operators.get(session.operator)
    if (now - session.last >= IDLE or now - session.created >= ABSOLUTE or operator is None
            or operator.generation != session.generation or not operator.enrolled):
        await console.store.delete(key)
        return None
    session.last = now
    await console.store.set(key, json.dumps(asdict(session)).encode(), ttl=IDLE)
    return session, operator


async def end_session(console: Console, request: web.Request, response: web.StreamResponse) -> None:
    token = single_cookie(request, cookie_name(console))
    if token:
        await console.store.delete(_key(token))
    response.del_cookie(cookie_name(console), path="/")


def pre_csrf(console: Console, pre: str) -> str:
    return hmac.new(console.csrf_key, pre.encode(), hashlib.sha256).hexdigest()


async def checked_form(console: Console, request: web.Request) -> dict[str, str]:
    """The POSTed form, after its CSRF token matched (403 otherwise)."""
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    session = request.get(SESSION)
    if session is not None:
        expected = session.csrf
    else:
        pre = single_cookie(request, PRE_COOKIE) or ""
        expected = pre_csrf(console, pre) if pre else ""
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")
    return form


async def audit(console: Console, request: web.Request, action: str, *, permission: str,
                reason: str | None = None, identifiers: dict[str, str] | None = None, **extra: Any) -> None:
    """Every console action, under the operator's name with the permission it used."""
    operator = request[OPERATOR]
    entry = admin_entry(action, operator=f"console:{operator.name}", reason=reason,
                        identifiers=identifiers or {}, extra={"permission": permission, "via": "console", **extra})
    entry.client_ip = request.remote
    entry.path, entry.method = request.path, request.method
    if console.writer is not None:
        await console.writer.put(entry)


async def require(console: Console, request: web.Request, permission: str) -> None:
    """403 (a page, and an audit record of the attempt) unless the operator holds it."""
    operator = request[OPERATOR]
    if operator.can(permission):
        return
    await audit(console, request, "console_denied", permission=permission, reason=f"lacks {permission}")
    raise web.HTTPForbidden(text="forbidden") from None


async def step_up(console: Console, request: web.Request, form: dict[str, str], permission: str) -> None:
    """The second factor asked again (support access, 2FA reset, new operator): a wrong code
    counts as a failed sign-in and refuses the action."""
    operator = request[OPERATOR]
    subject = f"op:{operator.name}"
    if await console.lockouts.current(subject, request.remote or "") is None:
        result = await console.operators.verify_totp(operator.name, form.get("code", ""))
        if result.ok:
            return
        await console.lockouts.record_failure(subject, request.remote or "")
    await audit(console, request, "console_step_up_failed", permission=permission)
    raise StepUpFailed()


class StepUpFailed(web.HTTPForbidden):
    pass


# -- sign-in, enrollment, sign-out -------------------------------------------------------
async def login_page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    console: Console = request.app[CONSOLE]
    pre = single_cookie(request, PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", status=status, csrf=pre_csrf(console, pre), error=error,
                      ended=request.query.get("ended") == "1", property_name=console.policy().property)
    set_cookie(console, response, PRE_COOKIE, pre, 3600)
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    console: Console = request.app[CONSOLE]
    form = await checked_form(console, request)
    name, ip = form.get("name", "").strip().lower(), request.remote or ""
    subject = f"op:{name[:64]}"
    if await console.lockouts.current(subject, ip) is not None:
        return await login_page(request, error="login.locked", status=429)
    operator = await console.operators.get(name)
    password_ok = await console.operators.verify_password(name, form.get("password", ""))
    totp_ok = password_ok and (await console.operators.verify_totp(name, form.get("code", ""))).ok
    if operator is None or not totp_ok:
        await console.lockouts.record_failure(subject, ip)
        if console.writer is not None:
            entry = admin_entry("console_login_failed", operator=f"console:{name[:64]}",
                                reason="password" if not password_ok else "second factor")
            entry.client_ip = ip
            await console.writer.put(entry)
        return await login_page(request, error="login.failed", status=401)
    await console.lockouts.clear_user(subject, ip)
    response = see_other("/")
    await open_session(console, operator, response)
    response.del_cookie(PRE_COOKIE, path="/")
    if console.writer is not None:
        entry = admin_entry("console_login", operator=f"console:{operator.name}", reason="password+totp")
        entry.client_ip = ip
        await console.writer.put(entry)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    console: Console = request.app[CONSOLE]
    await checked_form(console, request)
    response = see_other("/login")
    await end_session(console, request, response)
    return response


async def enroll_page(request: web.Request) -> web.Response:
    """Step 1: name and enrollment code. Step 2 (POST): QR code, password, first TOTP code."""
    console: Console = request.app[CONSOLE]
    pre = single_cookie(request, PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "enroll.html", csrf=pre_csrf(console, pre), step=1, error=None,
                      property_name=console.policy().property)
    set_cookie(console, response, PRE_COOKIE, pre, 3600)
    return response


async def enroll_submit(request: web.Request) -> web.StreamResponse:
    from gateway.admin.operators import OperatorRefused
    from gateway.auth.users import UserDirectory

    console: Console = request.app[CONSOLE]
    form = await checked_form(console, request)
    name, code, ip = form.get("name", ""), form.get("enroll_code", ""), request.remote or ""
    subject = f"op:{name.strip().lower()[:64]}"
    context: dict[str, Any] = {"csrf": form["csrf"], "property_name": console.policy().property, "error": None,
                               "name": name, "enroll_code": code}
    if await console.lockouts.current(subject, ip) is not None:
        return render(request, "enroll.html", status=429, step=1, **{**context, "error": "login.locked"})
    if await console.operators.check_enrollment_code(name, code) is None:
        await console.lockouts.record_failure(subject, ip)
        return render(request, "enroll.html", status=401, step=1, **{**context, "error": "enroll.bad_code"})
    secret = form.get("secret") or console.operators.new_totp_secret()
    uri = console.operators.provisioning_uri(name.strip().lower(), secret, console.policy().property)
    context.update(secret=secret, qr=UserDirectory.qr_svg(uri))
    if form.get("step") != "2":
        return render(request, "enroll.html", step=2, **context)
    if form.get("password", "") != form.get("password2", ""):
        return render(request, "enroll.html", status=400, step=2, **{**context, "error": "enroll.mismatch"})
    try:
        done = await console.operators.enroll(name, code, form.get("password", ""), secret, form.get("code", ""))
    except OperatorRefused:
        return render(request, "enroll.html", status=400, step=2, **{**context, "error": "enroll.short"})
    except ValueError:
        done = False
    if not done:
        return render(request, "enroll.html", status=400, step=2, **{**context, "error": "enroll.bad_totp"})
    if console.writer is not None:
        entry = admin_entry("operator_enrolled", operator=f"console:{name.strip().lower()}")
        entry.client_ip = ip
        await console.writer.put(entry)
    return see_other("/login?enrolled=1")
