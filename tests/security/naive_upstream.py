"""A deliberately naive PMS for attack tests: it trusts whatever it is sent.

Each quirk below is one a real framework has, and each is a way the gateway and the PMS
could read two different things out of one request if the gateway let it through:

- it honours the form's `charset` parameter (aiohttp, servlets, ASP.NET do), and takes
  the *first* of duplicate fields;
- like ASP.NET's `Request[]`, it reads a credential from the query string or a cookie
  when the body lacks it;
- it redirects to `ReturnUrl` / `returnUrl` / `next` as given (an open redirect);
- it routes `/reservations/<id>` with `int()`, which accepts fullwidth digits and
  leading zeros;
- it honours `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, `_method`
  (in the query, and in a POST's form body as Rack and Laravel read it) and `X-Original-URL` / `X-Rewrite-URL`;
- it has a second login endpoint (`/switch-user`, JSON `/api/login`) that sets the
  session cookie for another user inside a session, without any password of theirs;
- `/login-in-place` signs in within the session the request already carries, without a
  new session id (PHP's `$_SESSION['user'] = ...` without `session_regenerate_id()`);
- `/sloppy-cookie` writes its session cookie as `PMSSESSID =x` (a space before `=`);
- `/echo` reports the method, path, headers and cookies it saw; `/ws` is a WebSocket;
- `/hop` answers with `Connection` naming end-to-end headers (`Cache-Control`,
  `Set-Cookie`) besides a custom hop-by-hop one.

The signed-in user is shown on every page as `Logged in as <b>name</b>`, the way the
demo PMS does, so `login.identity` can read it.
"""

from __future__ import annotations

import codecs
import json
import secrets
from urllib.parse import parse_qsl, unquote

from aiohttp import WSMsgType, web

PASSWORDS = {"alice": "alice-demo-pw", "bob": "bob-demo-pw", "manager": "manager-demo-pw"}
SESSION_COOKIE = "PMSSESSID"
SESSIONS = web.AppKey("sessions", dict)
SEEN = web.AppKey("seen", list)  # (method, path, user) of every routed request
RESERVATIONS = {1002: "Reservation 1002: guest Ada Lovelace, card 4111 1111 1111 1111"}
_OVERRIDE_HEADERS = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


async def _form(request: web.Request) -> list[tuple[str, str]]:
    """The body as the PMS reads it: decoded with the declared charset, `+` as space."""
    raw = await request.read()
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() == "application/json":
        document = json.loads(raw.decode(_charset(content_type)))  # last duplicate key wins
        return [(str(k), str(v)) for k, v in document.items()]
    text = codecs.decode(raw, _charset(content_type), errors="replace")
    return parse_qsl(text, keep_blank_values=True)


def _first(pairs: list[tuple[str, str]], request: web.Request, name: str) -> str:
    """Body first, then query string, then cookies: ASP.NET's `Request[name]`."""
    for key, value in pairs:
        if key == name:
            return value
    return request.query.get(name) or request.cookies.get(name, "")


def _user(request: web.Request) -> str | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:  # a sloppy client may have kept the name with its space
        cookie = next((v for k, v in request.cookies.items() if k.strip() == SESSION_COOKIE), None)
    return request.app[SESSIONS].get(cookie or "")


def _page(request: web.Request, body: str, status: int = 200) -> web.Response:
    user = _user(request)
    banner = f"<p>Logged in as <b>{user}</b></p>" if user else "<p>Not logged in</p>"
    return web.Response(text=f"<html><body>{banner}{body}</body></html>", content_type="text/html", status=status)


def _open_session(request: web.Request, user: str, location: str, *, sloppy: bool = False) -> web.Response:
    token = secrets.token_urlsafe(16)
    request.app[SESSIONS][token] = user
    response = web.Response(status=302, headers={"Location": location})
    name = f"{SESSION_COOKIE} " if sloppy else SESSION_COOKIE
    response.headers.add("Set-Cookie", f"{name}={token}; Path=/; HttpOnly")
    return response


async def login_form(request: web.Request) -> web.Response:
    return _page(request, '<form method="post" action="/login"><input name="username">'
                          '<input name="password" type="password"></form>')


async def login(request: web.Request) -> web.Response:
    pairs = await _form(request)
    user, password = _first(pairs, request, "username"), _first(pairs, request, "password")
    if PASSWORDS.get(user) != password:
        return _page(request, "Invalid username or password")
    target = next((v for k, v in pairs if k.lower() in ("returnurl", "next")), None)
    target = target or request.query.get("ReturnUrl") or request.query.get("returnUrl") or "/"
    return _open_session(request, user, target)


async def login_in_place(request: web.Request) -> web.Response:
    """A login that rebinds the session it came with (no new cookie) when there is one."""
    pairs = await _form(request)
    user, password = _first(pairs, request, "username"), _first(pairs, request, "password")
    if PASSWORDS.get(user) != password:
        return _page(request, "Invalid username or password")
    token = request.cookies.get(SESSION_COOKIE)
    if token in request.app[SESSIONS]:
        request.app[SESSIONS][token] = user
        return web.Response(status=302, headers={"Location": "/"})
    return _open_session(request, user, "/")


async def switch_user(request: web.Request) -> web.Response:
    """Inside a session, become someone else: no password of theirs is asked."""
    if _user(request) is None:
        return _page(request, "login first", status=403)
    pairs = await _form(request)
    return _open_session(request, _first(pairs, request, "as"), "/")


async def api_login(request: web.Request) -> web.Response:
    pairs = dict(await _form(request))
    if PASSWORDS.get(pairs.get("username", "")) != pairs.get("password"):
        return web.json_response({"ok": False}, status=401)
    response = _open_session(request, pairs["username"], "/")
    response.set_status(200)
    del response.headers["Location"]
    return response


async def sloppy_cookie(request: web.Request) -> web.Response:
    user = _user(request) or "alice"
    return _open_session(request, user, "/", sloppy=True)


async def toss_console_cookies(request: web.Request) -> web.Response:
    """A PMS page setting the console's cookie names (cookie tossing across ports)."""
    response = _page(request, "tossed")
    for name in ("gw_console", "__Host-gw_console", "gw_console_pre", "gw_console_lang", "kept"):
        response.headers.add("Set-Cookie", f"{name}=tossed; Path=/")
    return response


async def home(request: web.Request) -> web.Response:
    return _page(request, "<a href='/reservations/1002'>1002</a>")


async def reservation(request: web.Request) -> web.Response:
    if _user(request) is None:
        return _page(request, "login first", status=403)
    number = int(unquote(request.match_info["id"]))  # int() accepts "０１００２" and "01002"
    return _page(request, RESERVATIONS.get(number, "no such reservation"))


async def delete_reservation(request: web.Request) -> web.Response:
    return _page(request, f"deleted {request.match_info['id']}")


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    return web.Response(status=302, headers={"Location": "/login"})


async def echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "cookies": dict(request.cookies),
            "user": _user(request),
            "body": (await request.read()).decode("latin-1"),
        }
    )


async def hop(request: web.Request) -> web.Response:
    response = web.Response(text="hop", headers={"Cache-Control": "no-store", "X-Secret-Hop": "1"})
    response.headers["Connection"] = "Cache-Control, Set-Cookie, X-Secret-Hop"
    response.headers.add("Set-Cookie", "theme=dark; Path=/")
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(f"hello {_user(request)}")
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws


@web.middleware
async def honour_overrides(request: web.Request, handler) -> web.StreamResponse:
    """What Symfony, Laravel, Rails, IIS rewrite modules do: route on the override."""
    method = next((request.headers[h] for h in _OVERRIDE_HEADERS if h in request.headers), None)
    method = method or request.query.get("_method")
    if not method and request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        method = dict(parse_qsl((await request.read()).decode("latin-1"))).get("_method")  # Rack, Laravel
    url = request.headers.get("X-Original-URL") or request.headers.get("X-Rewrite-URL")
    if method or url:
        app = request.app
        request = request.clone(method=(method or request.method).upper(), rel_url=url or request.rel_url)
        match = await app.router.resolve(request)
        match.add_app(app)
        match.freeze()
        request._match_info = match  # route the clone as the framework would
        handler = match.handler
    request.app[SEEN].append((request.method, request.path, _user(request)))
    return await handler(request)


def create_app() -> web.Application:
    app = web.Application(middlewares=[honour_overrides])
    app[SESSIONS] = {}
    app[SEEN] = []
    app.router.add_get("/", home)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/login-in-place", login_in_place)
    app.router.add_post("/switch-user", switch_user)
    app.router.add_post("/api/login", api_login)
    app.router.add_get("/sloppy-cookie", sloppy_cookie)
    app.router.add_get("/reservations/{id}", reservation)
    app.router.add_delete("/reservations/{id}", delete_reservation)
    app.router.add_route("*", "/logout", logout)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/hop", hop)
    app.router.add_get("/toss-console-cookies", toss_console_cookies)
    return app
