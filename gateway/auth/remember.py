"""Remember-this-device: skip the second factor on a browser that passed it recently.

Only where the group's policy allows persistent login (`sessions.remember_device`). The
cookie is a signed statement (user, device id, issued, expiry) bound to the long-lived
device cookie, so copying it to another browser without the device cookie is useless,
and it cannot be forged without the key.

The group's rule is read at every use, not only when the cookie was issued: with
`remember_device: false` no remembered browser skips the second factor, and a shorter
duration ends cookies issued longer ago. `RememberWithdrawal` goes one step further and
deletes a member's cookie at their next request (and the login code at their next login),
so a device the policy ended stays ended when the group allows remembering again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.policy.schema import SessionPolicy
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.server import PolicyGetter
from gateway.sessions.cookies import REMEMBER_COOKIE, clear_cookie, cookie_value, set_cookie


class RememberedDevices:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.clock = clock

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, user: str, device_id: str, lifetime: float, *, secure: bool) -> str:
        now = int(self.clock())
        payload = json.dumps({"u": user, "d": device_id, "i": now, "e": int(now + lifetime)}).encode()
        token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)
        return set_cookie(REMEMBER_COOKIE, token, secure=secure, max_age=int(lifetime))

    def claims(self, request: web.BaseRequest) -> dict[str, Any] | None:
        """The browser's remember cookie, if it carries one the gateway signed."""
        token = cookie_value(request.headers.get("Cookie"), REMEMBER_COOKIE)
        if not token or "." not in token:
            return None
        encoded, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            claims = json.loads(payload)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)) or not isinstance(claims, dict):
            return None
        return claims

    def _still_valid(self, claims: dict[str, Any], rules: SessionPolicy) -> bool:
        """Within the cookie's own expiry and within what the group allows today."""
        if rules.remember_device is False:
            return False
        now = self.clock()
        issued, expires = claims.get("i"), claims.get("e")
        if not isinstance(issued, int) or not isinstance(expires, int):
            return False
        return expires > now and issued + rules.remember_device > now

    async def valid(self, request: web.BaseRequest, user: str, device_id: str, rules: SessionPolicy) -> bool:
        claims = self.claims(request)
        if claims is None or claims.get("u") != user or claims.get("d") != device_id:
            return False
        return self._still_valid(claims, rules)

    def withdraw_ended(
        self, request: web.BaseRequest, headers: CIMultiDict[str], user: str, rules: SessionPolicy, *, secure: bool
    ) -> bool:
        """Delete `user`'s remember cookie in this answer if the group's rules ended it
        (another user's cookie on a shared browser is theirs to keep); True if deleted."""
        claims = self.claims(request)
        if claims is None or claims.get("u") != user or self._still_valid(claims, rules):
            return False
        headers.add("Set-Cookie", clear_cookie(REMEMBER_COOKIE, secure=secure))
        return True


class RememberWithdrawal(Addon):
    """At a session's next request, delete its user's remember cookie if the group no
    longer allows it (after the session guard, which finds the session)."""

    def __init__(self, policy: PolicyGetter, remembered: RememberedDevices) -> None:
        self.policy = policy
        self.remembered = remembered

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        session = ex.notes.get("session")
        if session is not None:
            rules = self.policy().sessions_for(session.group)
            self.remembered.withdraw_ended(ex.request, answer.headers, session.user, rules, secure=ex.scheme == "https")
        return None
