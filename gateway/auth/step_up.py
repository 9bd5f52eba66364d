"""Step-up: a re-authentication form held until the gateway's own second factor is passed.

A password typed at an unattended desk proves little, so a `reauth` form with `step_up:
true` is not forwarded when it arrives. The request (path, query, Content-Type, body:
it carries the password) is kept sealed in the ephemeral store under the operator's key,
bound to the session, for the pending-login timeout at most; the browser gets an opaque
token (`gw_step_up`, HttpOnly, SameSite=Strict) and the usual second-factor page, driven by
a pending login that creates no session (`PendingLogin.step_up`). When the code is right,
the record is marked passed and the browser is sent back (307, so it posts again) to the
form's path; the guard then takes the record, exactly once, and forwards the held body in
place of what the browser re-sent. A record of another session, another path or query, or
not passed is never replayed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiohttp import web

from gateway.auth.pending import PendingLogin
from gateway.pages.render import wants_json
from gateway.proxy.exchange import CLIENT
from gateway.sessions.cookies import PENDING_COOKIE, STEP_UP_COOKIE, clear_cookie
from gateway.sessions.model import new_token, token_hash
from gateway.sessions.sealed import Cipher, SealedRecords
from gateway.store.base import EphemeralStore


@dataclass
class HeldRequest:
    session_hash: str
    user: str
    path: str  # canonical path, as matched
    target: str  # the encoded path and query the browser posts to again
    content_type: str
    body: str  # base64
    expires: float
    passed: bool = False

    @property
    def raw_body(self) -> bytes:
        return base64.b64decode(self.body)


class StepUps:
    """Held re-authentication requests by token; each is replayed at most once."""

    def __init__(
        self, store: EphemeralStore, cipher: Cipher, timeout: Callable[[], float], clock: Callable[[], float] = time.time
    ) -> None:
        self.records = SealedRecords(store, cipher, "step-up:")
        self.timeout = timeout
        self.clock = clock

    async def hold(self, *, session_hash: str, user: str, path: str, target: str, content_type: str, body: bytes) -> str:
        token = new_token()
        held = HeldRequest(
            session_hash, user, path, target, content_type, base64.b64encode(body).decode(), self.clock() + self.timeout()
        )
        await self._put(token, held)
        return token

    async def _put(self, token: str, held: HeldRequest) -> None:
        ttl = max(1.0, held.expires - self.clock())
        await self.records.put(token_hash(token), json.dumps(asdict(held)).encode(), ttl=ttl)

    async def _get(self, token: str, *, take: bool) -> HeldRequest | None:
        read = self.records.take if take else self.records.get
        data = await read(token_hash(token))
        held = HeldRequest(**json.loads(data)) if data is not None else None
        return held if held is not None and self.clock() < held.expires else None

    async def take(self, token: str, session_hash: str, path: str, target: str) -> HeldRequest | None:
        """The held request to replay now: passed, of this session, path and exact target
        (the query string too: it was read with the body, and a PMS reading a credential
        out of the query must not find one added to the replay); gone afterwards whatever
        it was (a token is good for one request)."""
        held = await self._get(token, take=True)
        if held is None or not held.passed or held.session_hash != session_hash or held.path != path:
            return None
        return held if held.target == target else None

    async def passed(self, request: web.BaseRequest, pending: PendingLogin) -> web.StreamResponse:
        """The second factor of a step-up was passed: mark its request and send the browser
        back to post it again (307 keeps the method), where the guard replays it."""
        assert pending.step_up is not None
        held = await self._get(pending.step_up, take=False)
        secure = request[CLIENT].scheme == "https"
        if held is None or held.user != pending.user:
            response: web.StreamResponse = web.json_response({"error": "step_up_expired"}, status=410) \
                if wants_json(request) else web.Response(status=303, headers={"Location": "/"})
        else:
            held.passed = True
            await self._put(pending.step_up, held)
            if wants_json(request):
                response = web.json_response({"status": "ok", "location": held.target, "method": "POST"})
            else:
                response = web.Response(status=307, headers={"Location": held.target})
        response.headers.add("Set-Cookie", clear_cookie(PENDING_COOKIE, secure=secure, path="/_gateway/"))
        response.headers["Cache-Control"] = "no-store"
        return response


def clear_step_up(headers, *, secure: bool) -> None:
    headers.add("Set-Cookie", clear_cookie(STEP_UP_COOKIE, secure=secure))
