"""Remember-this-device: skip the second factor on a browser that passed it recently.

Only where the group's policy allows persistent login. The cookie is a signed statement
(user, device id, expiry) bound to the long-lived device cookie, so copying it to another
browser without the device cookie is useless, and it cannot be forged without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from aiohttp import web

from gateway.policy.schema import SessionPolicy
from gateway.sessions.cookies import REMEMBER_COOKIE, cookie_value, set_cookie


class RememberedDevices:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.clock = clock

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, user: str, device_id: str, lifetime: float, *, secure: bool) -> str:
        payload = json.dumps({"u": user, "d": device_id, "e": int(self.clock() + lifetime)}).encode()
        token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)
        return set_cookie(REMEMBER_COOKIE, token, secure=secure, max_age=int(lifetime))

    async def valid(self, request: web.BaseRequest, user: str, device_id: str, rules: SessionPolicy) -> bool:
        if rules.remember_device is False:
            return False
        token = cookie_value(request.headers.get("Cookie"), REMEMBER_COOKIE)
        if not token or "." not in token:
            return False
        encoded, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            claims = json.loads(payload)
        except ValueError:
            return False
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        return claims.get("u") == user and claims.get("d") == device_id and claims.get("e", 0) > self.clock()
