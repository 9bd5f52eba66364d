"""A PMS whose login is nothing like the demo's, for `login discover` to read.

A single-page app: the sign-in page is a form without `action` whose fields have ids but
no names; a same-origin script posts them as JSON (`{"login", "passphrase"}`) to
`/api/session`, with the CSRF token of `<meta name="csrf-token">` in an `X-CSRF-Token`
header (bound to a pre-login cookie). A refused password is answered by a redirect back to
`/signin?error=1`; an accepted one by 200 JSON and the session cookie `desk_session`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

USERS = {"ana": "ana-pass-phrase"}
PRE_COOKIE = "spa_pre"
SESSION_COOKIE = "desk_session"
_KEY = secrets.token_bytes(16)

SIGNIN_JS = """\
document.getElementById('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const response = await fetch('/api/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
    body: JSON.stringify({login: document.getElementById('email').value,
                          passphrase: document.getElementById('passphrase').value}),
  });
  if (response.redirected) { window.location = response.url; return; }
  window.location = (await response.json()).next;
});
"""


def _token(pre: str) -> str:
    return hmac.new(_KEY, pre.encode(), hashlib.sha256).hexdigest()


def discover_pms() -> web.Application:
    sessions: dict[str, str] = {}

    async def signin(request: web.Request) -> web.Response:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_hex(16)
        error = '<div class="alert">That did not work. Try again.</div>' if request.query.get("error") else ""
        html = f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="csrf-token" content="{_token(pre)}"><title>Front desk</title>
<link rel="stylesheet" href="/assets/desk.css"></head><body>
<div id="app">{error}<form id="signin-form">
<label>E-mail <input id="email" type="email" autocomplete="username"></label>
<label>Passphrase <input id="passphrase" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></div>
<script src="/assets/signin.js"></script></body></html>"""
        response = web.Response(text=html, content_type="text/html")
        response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="Strict")
        return response

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=SIGNIN_JS, content_type="application/javascript")

    async def style(request: web.Request) -> web.Response:
        return web.Response(text="body { font-family: sans-serif }", content_type="text/css")

    async def create_session(request: web.Request) -> web.Response:
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not hmac.compare_digest(request.headers.get("X-CSRF-Token", ""), _token(pre)):
            return web.json_response({"error": "CSRF token missing or wrong"}, status=403)
        body = await request.json()
        login, passphrase = str(body.get("login", "")), str(body.get("passphrase", ""))
        if USERS.get(login) is None or not hmac.compare_digest(USERS[login], passphrase):
            raise web.HTTPSeeOther("/signin?error=1")
        sid = secrets.token_urlsafe(16)
        sessions[sid] = login
        response = web.json_response({"next": "/desk"})
        response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax")
        return response

    async def desk(request: web.Request) -> web.Response:
        user = sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if user is None:
            raise web.HTTPSeeOther("/signin")
        return web.Response(
            text=f'<html><body><header>Signed in: <span class="who">{user}</span> '
            f'<a href="/signout">Sign out</a></header><h1>Arrivals</h1></body></html>',
            content_type="text/html",
        )

    async def signout(request: web.Request) -> web.Response:
        sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = web.Response(status=303, headers={"Location": "/signin"})
        response.del_cookie(SESSION_COOKIE)
        return response

    async def home(request: web.Request) -> web.Response:
        raise web.HTTPFound("/desk")

    async def about(request: web.Request) -> web.Response:
        return web.Response(text="<html><body><h1>Front desk 3.1</h1></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/signin", signin)
    app.router.add_get("/assets/signin.js", script)
    app.router.add_get("/assets/desk.css", style)
    app.router.add_post("/api/session", create_session)
    app.router.add_get("/desk", desk)
    app.router.add_get("/signout", signout)
    app.router.add_get("/about", about)
    return app
