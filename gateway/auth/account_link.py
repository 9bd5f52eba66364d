"""The "my account" link in the PMS's pages (`pages.account_link`).

Staff rarely type /_gateway/account; with the option on, every HTML page the PMS shows a
signed-in user gets a small link to it in a corner (gateway.pages.injected: same-origin
stylesheet and script file, so a strict PMS Content-Security-Policy allows it). The link's
button hides it until the browser is closed: the page's script sets the browser-session
cookie `gw_account_link`, and pages are then left alone.

Only top-level documents get it: a page loaded in a frame or fetched by a script
(`Sec-Fetch-Dest` other than `document`) would show one link per frame or break the
fragment. Browsers that send no `Sec-Fetch-Dest` get it on pages with a `<body>` only.
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth.account import ACCOUNT
from gateway.pages.injected import account_link
from gateway.pages.render import choose_language, translator
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.page_injection import inject_html
from gateway.proxy.server import PolicyGetter
from gateway.sessions.cookies import ACCOUNT_LINK_COOKIE, cookie_value


class AccountLink(Addon):
    """Injects the link into signed-in users' PMS pages; needs the session guard's session."""

    def __init__(self, policy: PolicyGetter) -> None:
        self.policy = policy

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        headers = ex.request.headers
        if (
            not self.policy().pages.account_link
            or ex.notes.get("session") is None
            or ex.notes.get("logout")
            or ex.request.method != "GET"
            or headers.get("Sec-Fetch-Dest", "document") != "document"
            or cookie_value(headers.get("Cookie"), ACCOUNT_LINK_COOKIE) == "hidden"
        ):
            return None
        t = translator(choose_language(headers.get("Accept-Language")))
        await inject_html(ex.request.method, answer, account_link(t, ACCOUNT))
        return None
