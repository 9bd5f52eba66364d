"""The demo PMS: a deliberately old-fashioned booking application.

It behaves like the legacy systems the gateway is placed in front of: a form login that
answers a wrong password with 200 and an error text, a server-side session in a cookie,
CSRF tokens in hidden fields and in a JS-readable cookie, and confirmation messages that
leak card and passport numbers. The gateway's login interception, cookie vault and
redaction are tested against exactly these behaviours, so keep them old-fashioned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
import jinja2
from aiohttp import web

from gateway.demo import confirmations, guest_api, streams
from gateway.demo.state import DEMO_USERS, DemoState, Reservation, Session

__all__ = [
    "CSRF_COOKIE",
    "DEMO_USERS",
    "PRELOGIN_COOKIE",
    "SESSION_COOKIE",
    "STATE",
    "DemoSettings",
    "DemoState",
    "create_app",
]

SESSION_COOKIE = "PMSSESSID"
CSRF_COOKIE = "pms_csrf"
PRELOGIN_COOKIE = "PMSPRELOGIN"

_PRELOGIN_FORMAT = re.compile(r"[A-Za-z0-9_-]{32}")
_HERE = Path(__file__).parent


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    property_name: str = "Hotel Demo"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    mail_from: str = "reservations@hotel-demo.example"
    sms_api_url: str = "http://127.0.0.1:8025"
    sms_account_sid: str = "ACdemo00000000000000000000000000"
    sms_auth_token: str = "demo-auth-token"
    sms_from: str = "+15005550006"
    # Outgoing API calls may go through the gateway's egress proxy; `ca_file` then
    # names the proxy's CA so that HTTPS APIs can still be verified.
    http_proxy: str | None = None
    ca_file: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    session_idle_seconds: float = 3600
    send_timeout: float = 10.0
    # Answer gzip-compressed when the browser accepts it, as most real PMSs (IIS, nginx) do:
    # what the gateway adds to pages must survive that.
    compress: bool = False


STATE = web.AppKey("demo_state", DemoState)
SETTINGS = web.AppKey("demo_settings", DemoSettings)
TEMPLATES = web.AppKey("demo_templates", jinja2.Environment)
HTTP = web.AppKey("demo_http", aiohttp.ClientSession)


def create_app(settings: DemoSettings | None = None) -> web.Application:
    settings = settings or DemoSettings()
    app = web.Application(middlewares=[_compress] if settings.compress else [])
    app[SETTINGS] = settings
    app[STATE] = DemoState(settings.session_idle_seconds)
    app[TEMPLATES] = _templates()
    app.cleanup_ctx.append(_http_client)

    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/logout", logout)
    app.router.add_post("/logout", logout)
    app.router.add_get("/reservations", reservation_list)
    app.router.add_get(r"/reservations/{id:\d+}", reservation_detail)
    app.router.add_post(r"/reservations/{id:\d+}/confirm", confirm_page)
    app.router.add_post(r"/api/reservations/{id:\d+}/confirm", confirm_api)
    app.router.add_get("/reports", reports)
    app.router.add_get("/api/refresh", refresh)
    app.router.add_get("/_demo/sessions", demo_sessions)
    app.router.add_static("/static", _HERE / "static")
    app.router.add_get("/favicon.ico", favicon)
    streams.add_routes(app)
    guest_api.add_routes(app)  # the guest's e-mailed booking page and the channel manager's API
    from gateway.demo import passwords  # it uses this module's helpers

    passwords.add_routes(app)
    return app


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The old PMS shows British-style dates everywhere.
    env.filters["date"] = lambda value: value.strftime("%d/%m/%Y")
    return env


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    ca_file = app[SETTINGS].ca_file
    tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
        app[HTTP] = http
        yield


@web.middleware
async def _compress(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept-Encoding", "").split(",")}
    if "gzip" in accepted and type(response) is web.Response and response.body:
        response.enable_compression(web.ContentCoding.gzip)
    return response


# --- helpers -----------------------------------------------------------------------


def render(
    request: web.Request, template: str, session: Session | None, status: int = 200, **context
) -> web.Response:
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(property_name=request.app[SETTINGS].property_name, session=session, **context)
    )
    return web.Response(text=html, status=status, content_type="text/html")


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _field(form, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _same_token(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _safe_next(target: str) -> str:
    """Only same-site paths: '//host', '/\\host' and absolute URLs are open redirects."""
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x20 or c == "\\" for c in target)
    ):
        return "/reservations"
    return target


def _session(request: web.Request) -> Session | None:
    return request.app[STATE].touch_session(request.cookies.get(SESSION_COOKIE))


def _require_session(request: web.Request) -> Session:
    session = _session(request)
    if session is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(
                text='{"error": "not logged in"}', content_type="application/json"
            )
        raise web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
    return session


async def _session_csrf_ok(request: web.Request, session: Session) -> bool:
    token = request.headers.get("X-CSRF-Token")
    if token is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        token = _field(await request.post(), "csrf_token")
    return _same_token(token or "", session.csrf_token)


def _csrf_failure(request: web.Request, session: Session | None) -> web.Response:
    return render(
        request, "error.html", session, status=403,
        title="Forbidden", message="Invalid CSRF token",
    )


def _reservation(request: web.Request) -> Reservation:
    reservation = request.app[STATE].reservations.get(int(request.match_info["id"]))
    if reservation is None:
        raise web.HTTPNotFound(text="Reservation not found")
    return reservation


# --- login and logout --------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    return redirect("/reservations" if _session(request) else "/login")


def _login_page(
    request: web.Request, prelogin: str, next_path: str, error: str = ""
) -> web.Response:
    return render(
        request, "login.html", None,
        csrf_token=request.app[STATE].login_csrf_token(prelogin),
        next_path=next_path,
        error=error,
    )


async def login_form(request: web.Request) -> web.Response:
    # Reusing a well-formed pre-login cookie keeps forms open in other tabs valid.
    prelogin = request.cookies.get(PRELOGIN_COOKIE, "")
    if not _PRELOGIN_FORMAT.fullmatch(prelogin):
        prelogin = secrets.token_urlsafe(24)
    response = _login_page(request, prelogin, request.query.get("next", ""))
    response.set_cookie(PRELOGIN_COOKIE, prelogin, path="/", httponly=True)
    return response


async def login_submit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await request.post()
    prelogin = request.cookies.get(PRELOGIN_COOKIE, "")
    if not prelogin or not _same_token(
        _field(form, "csrf_token"), state.login_csrf_token(prelogin)
    ):
        return _csrf_failure(request, None)

    next_path = _field(form, "next") or request.query.get("next", "")
    account = state.authenticate(_field(form, "username"), _field(form, "password"))
    if account is None:
        # Old PMSs answer a failed login with 200 and the form again.
        return _login_page(request, prelogin, next_path, error="Invalid username or password")

    session = state.open_session(account)
    response = redirect(_safe_next(next_path) if next_path else "/reservations")
    response.set_cookie(SESSION_COOKIE, session.sessid, path="/", httponly=True)
    response.set_cookie(CSRF_COOKIE, session.csrf_token, path="/")
    response.del_cookie(PRELOGIN_COOKIE, path="/")
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[STATE].close_session(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(CSRF_COOKIE, path="/")
    return response


# --- pages -------------------------------------------------------------------------


async def reservation_list(request: web.Request) -> web.Response:
    session = _require_session(request)
    reservations = sorted(
        request.app[STATE].reservations.values(), key=lambda r: (r.arrival, r.id)
    )
    return render(
        request, "reservations.html", session,
        reservations=reservations,
        new_bookings=request.app[STATE].new_bookings(),
    )


async def reservation_detail(request: web.Request) -> web.Response:
    session = _require_session(request)
    return render(request, "reservation.html", session, r=_reservation(request))


async def _confirm(request: web.Request, reservation: Reservation) -> dict:
    results = await confirmations.send_confirmation(
        reservation, request.app[SETTINGS], request.app[TEMPLATES], request.app[HTTP]
    )
    if results["email"].ok and reservation.status == "New":
        reservation.status = "Confirmed"
    return results


async def confirm_page(request: web.Request) -> web.Response:
    session = _require_session(request)
    if not await _session_csrf_ok(request, session):
        return _csrf_failure(request, session)
    reservation = _reservation(request)
    results = await _confirm(request, reservation)
    return render(request, "confirm_result.html", session, r=reservation, results=results)


async def confirm_api(request: web.Request) -> web.Response:
    session = _require_session(request)
    if not await _session_csrf_ok(request, session):
        return web.json_response({"error": "Invalid CSRF token"}, status=403)
    results = await _confirm(request, _reservation(request))
    return web.json_response({channel: str(result) for channel, result in results.items()})


async def reports(request: web.Request) -> web.Response:
    session = _require_session(request)
    if not session.is_manager:
        return render(
            request, "error.html", session, status=403,
            title="Forbidden", message="Access denied: reports are for managers only.",
        )
    state = request.app[STATE]
    return render(
        request, "reports.html", session,
        occupancy=state.occupancy(),
        by_status=state.count_by_status(),
        room_count=state.room_count,
    )


async def refresh(request: web.Request) -> web.Response:
    _require_session(request)
    return web.json_response(
        {
            "new_bookings": request.app[STATE].new_bookings(),
            "server_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )


async def favicon(request: web.Request) -> web.FileResponse:
    """The tab icon every browser asks for on every page (public in the default policy)."""
    return web.FileResponse(_HERE / "static" / "favicon.ico", headers={"Cache-Control": "max-age=86400"})


async def demo_sessions(request: web.Request) -> web.Response:
    """Test-only introspection: which sessions does the PMS still consider alive?"""
    return web.json_response(
        [
            {
                "user": session.user,
                "session_hash": session.session_hash,
                "created": session.created,
                "last_seen": session.last_seen,
            }
            for session in request.app[STATE].live_sessions()
        ]
    )
