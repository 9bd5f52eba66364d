"""The signed-in user's own page: recovery codes left, new recovery codes.

Changing what protects an account (new recovery codes here; adding or removing factors is
an operator action) asks for a current second factor first, so a session left open on a
front-desk PC is not enough to take the account over.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from aiohttp import web

from gateway.access.origin_check import same_origin
from gateway.pages.render import render_page, see_other
from gateway.policy.schema import Policy
from gateway.proxy.exchange import CLIENT, Addon
from gateway.risk.lockout import Lockouts
from gateway.sessions.cookies import SESSION_COOKIE, cookie_value
from gateway.sessions.manager import SessionManager

ACCOUNT = "/_gateway/account"


class AccountPage(Addon):
    def __init__(
        self, policy: Callable[[], Policy], users, sessions: SessionManager, lockouts: Lockouts, form_key: bytes
    ) -> None:
        self.policy = policy
        self.users = users
        self.sessions = sessions
        self.lockouts = lockouts
        self.form_key = form_key

    def routes(self) -> list[web.RouteDef]:
        return [web.get(ACCOUNT, self.show), web.post(ACCOUNT, self.submit)]

    def _token(self, session_hash: str) -> str:
        return hmac.new(self.form_key, b"account:" + session_hash.encode(), hashlib.sha256).hexdigest()

    async def _session(self, request: web.Request):
        session_id = cookie_value(request.headers.get("Cookie"), SESSION_COOKIE)
        session = await self.sessions.get(session_id) if session_id else None
        if session is None or self.sessions.expiry_reason(session) is not None:
            return None
        return session

    async def _render(self, request, session, *, status: int = 200, error: str | None = None, codes=None):
        record = await self.users.get(session.user)
        return render_page(
            request,
            "account.html",
            status=status,
            property_name=self.policy().property,
            user=session.user,
            left=await self.users.recovery_codes_left(session.user),
            csrf=self._token(session.id_hash),
            error=error,
            codes=codes,
            has_totp=record is not None and record.has_totp,
        )

    async def show(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return see_other(self.policy().login.path)
        return await self._render(request, session)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return see_other(self.policy().login.path)
        form = await request.post()
        token = str(form.get("csrf", ""))
        if not same_origin(request, request[CLIENT].origin) or not hmac.compare_digest(token, self._token(session.id_hash)):
            return await self._render(request, session, status=403, error="forbidden_text")
        ip = request[CLIENT].ip
        if await self.lockouts.current(session.user, ip) is not None:
            return await self._render(request, session, status=429, error="too_many_attempts")
        result = await self.users.verify_totp(session.user, str(form.get("code", "")).strip())
        if not result.ok:
            # An open session is not a licence to guess codes: wrong ones count toward lockout.
            await self.lockouts.record_failure(session.user, ip)
            error = "code_replayed" if result.reason == "replayed" else "code_invalid"
            return await self._render(request, session, status=401, error=error)
        codes = await self.users.generate_recovery_codes(session.user)
        return await self._render(request, session, codes=codes)
