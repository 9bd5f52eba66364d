"""`login discover` never prints the password (attack on the features of issue 8).

A PMS whose login form is a GET form gets the real login's password in the query string;
when that request failed (the PMS hung up or timed out on it), the "cannot reach URL" error
printed the whole URL, password included, on the operator's terminal (and in any CI log).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.harness import serve_app
from tests.test_login_discover import run_discover

PASSWORD = "S3cret pass/word+&="


def get_form_pms() -> web.Application:
    """A login page with a GET form; the wrong login is refused, the real one is hung up on."""

    async def login(request: web.Request) -> web.StreamResponse:
        user = request.query.get("user")
        if user is None:
            return web.Response(content_type="text/html", text=(
                '<html><body><form method="get" action="/login"><input name="user">'
                '<input type="password" name="pass"><button>Sign in</button></form></body></html>'))
        if user.startswith("discover-"):
            return web.Response(status=401, content_type="text/html",
                                text="<html><body><p class=error>Wrong password</p></body></html>")
        assert request.transport is not None
        request.transport.abort()  # the real login: the connection drops
        raise asyncio.CancelledError

    app = web.Application()
    app.router.add_get("/login", login)
    return app


async def test_a_failed_get_login_does_not_print_the_password():
    async with serve_app(get_form_pms()) as pms:
        result = await run_discover(pms + "/login", "--username", "ana", "--password-env", "PMS_PW",
                                    env={"PMS_PW": PASSWORD})
    assert result.exit_code == 2, result.output
    assert "cannot reach" in result.stderr
    for shown in (PASSWORD, "S3cret", "word%2B"):
        assert shown not in result.output, result.output
