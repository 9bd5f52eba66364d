"""CSRF against the PMS, stopped at the gateway.

Old PMSs rarely protect their forms. A state-changing request (POST, PUT, PATCH, DELETE)
is forwarded only when the browser says it comes from the gateway's own origin, in
`Origin` or, failing that, `Referer`. A request with neither is refused too: every
browser in use sends one of them on such requests.

A WebSocket handshake is a GET, but the socket it opens carries the session's cookies
both ways, and browsers apply no same-origin policy to it: any site could open one and
read the PMS's messages (cross-site WebSocket hijacking). So an upgrade is bridged only
when its `Origin` (which every browser sends on a handshake) is exactly the gateway's.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.access.api_clients import is_api_request
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import Addon, Exchange
from gateway.proxy.server import PolicyGetter
from gateway.proxy.websocket import is_websocket_upgrade

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OriginCheck(Addon):
    def __init__(self, policy: PolicyGetter) -> None:
        self.policy = policy
        self._compiled: tuple[int, list[re.Pattern[str]]] = (0, [])

    def _exempt(self, path: str) -> bool:
        csrf = self.policy().csrf
        if self._compiled[0] != id(csrf):
            self._compiled = (id(csrf), [re.compile(p) for p in csrf.exempt_paths])
        return any(p.search(path) for p in self._compiled[1])

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        if is_api_request(ex):
            return None  # an API client's token is no ambient credential a page could borrow
        if is_websocket_upgrade(ex.request):
            return self._upgrade(ex)
        if ex.request.method not in STATE_CHANGING or not self.policy().csrf.check_origin:
            return None
        if self._exempt(ex.path.path):
            return None
        if same_origin(ex.request, ex.public_origin):
            return None
        ex.deny("denied", "cross-origin or origin-less state-changing request")
        return error_response(ex.request, 403, ex.request_id, self.policy().property, detail="cross-origin request")

    def _upgrade(self, ex: Exchange) -> web.StreamResponse | None:
        if not self.policy().csrf.check_origin or self._exempt(ex.path.path):
            return None
        if upgrade_from_here(ex.request, ex.public_origin):
            return None
        ex.deny("denied", "cross-origin or origin-less WebSocket handshake")
        return error_response(ex.request, 403, ex.request_id, self.policy().property, detail="cross-origin WebSocket")


def upgrade_from_here(request: web.BaseRequest, public_origin: str) -> bool:
    """A WebSocket handshake: exactly one `Origin`, the public one (no Referer fallback)."""
    return request.headers.getall("Origin", []) == [public_origin]


def same_origin(request: web.BaseRequest, public_origin: str) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == public_origin
    referer = request.headers.get("Referer")
    if referer is not None:
        return referer == public_origin or referer.startswith(public_origin + "/")
    return False


def navigated_from_here(request: web.BaseRequest, public_origin: str) -> bool:
    """Whether a request (a GET link too) was started by the gateway's own pages or the user.

    `Sec-Fetch-Site` decides where the browser sends it (`same-origin`, or `none`: typed
    in the address bar, a bookmark); a page elsewhere cannot forge it. Older browsers and
    plain-http origins send no fetch metadata: then `Origin` or `Referer` must name the
    public origin. A request that proves nothing is not from here: another site can
    suppress the Referer of a link (`rel=noreferrer`).
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    return same_origin(request, public_origin)
