"""The signed-in user's own page: recovery codes left, new recovery codes, an authenticator
app added (or replaced), and (webauthn.js, gateway.auth.security_key_pages) security keys.

Every change to what protects the account asks for a current second factor first
(gateway.auth.account_step_up), so a session left open on a front-desk PC is not enough
to take the account over: the form's `code` field proves it (or a security key's
assertion did, moments before); the change spends the proof.

Adding an authenticator app takes two posts: `totp_start` (after the proof) shows a new
secret as a QR code, kept sealed under the operator's key for this session for as long as
the step-up lasts; `totp_confirm` saves it once a code from the new app is right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from aiohttp import web

from gateway.access.origin_check import same_origin
from gateway.auth.account_step_up import STEP_UP_SECONDS, AccountStepUp, Proof
from gateway.pages.render import render_page, see_other
from gateway.policy.schema import Policy
from gateway.proxy.exchange import CLIENT, Addon
from gateway.sessions.cookies import SESSION_COOKIE, cookie_value
from gateway.sessions.manager import SessionManager
from gateway.sessions.sealed import Cipher, SealedRecords
from gateway.store.base import EphemeralStore

ACCOUNT = "/_gateway/account"
_STATUS = {"proof_required": 401, "security_key_wait": 429, "too_many_attempts": 429}


class AccountPage(Addon):
    def __init__(
        self, policy: Callable[[], Policy], users, sessions: SessionManager, step_up: AccountStepUp,
        store: EphemeralStore, cipher: Cipher, form_key: bytes,
    ) -> None:
        self.policy = policy
        self.users = users
        self.sessions = sessions
        self.step_up = step_up
        self.new_secrets = SealedRecords(store, cipher, "account:totp:")
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

    async def _render(self, request, session, *, status: int = 200, error: str | None = None, codes=None,
                      secret: str | None = None, done: str | None = None):
        record = await self.users.get(session.user)
        context: dict[str, str | None] = {"secret": None, "qr": None}
        if secret is not None:
            uri = self.users.provisioning_uri(session.user, secret)
            context = {"secret": secret, "qr": self.users.qr_svg(uri)}
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
            done=done,
            has_totp=record is not None and record.has_totp,
            fresh=await self.step_up.fresh(session),
            **context,
        )

    async def show(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return see_other(self.policy().login.page_url())
        return await self._render(request, session)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return see_other(self.policy().login.page_url())
        form = await request.post()
        token = str(form.get("csrf", ""))
        client = request[CLIENT]
        if not same_origin(request, client.origin) or not hmac.compare_digest(token, self._token(session.id_hash)):
            return await self._render(request, session, status=403, error="forbidden_text")
        action = str(form.get("action", "recovery_codes"))
        if action == "totp_confirm":
            return await self._totp_confirm(request, session, str(form.get("new_code", "")))
        if action not in ("recovery_codes", "totp_start"):
            return await self._render(request, session, status=400, error="bad_request")
        error = await self.step_up.require(session, Proof.read(form.get("code")), ip=client.ip, origin=client.origin)
        if error is not None:
            return await self._render(request, session, status=_STATUS.get(error, 401), error=error)
        if action == "totp_start":
            secret = self.users.new_totp_secret()
            await self.new_secrets.put(session.id_hash, secret.encode(), ttl=STEP_UP_SECONDS)
            return await self._render(request, session, secret=secret)
        await self.step_up.spend(session)
        codes = await self.users.generate_recovery_codes(session.user)
        return await self._render(request, session, codes=codes)

    async def _totp_confirm(self, request: web.Request, session, code: str) -> web.StreamResponse:
        """Save the new app's secret: only while the step-up that showed it is fresh."""
        sealed = await self.new_secrets.get(session.id_hash)
        if sealed is None or not await self.step_up.fresh(session):
            return await self._render(request, session, status=401, error="proof_required")
        secret = sealed.decode()
        if not await self.users.enroll_totp(session.user, secret, "".join(code.split())):
            return await self._render(request, session, status=401, error="code_invalid", secret=secret)
        await self.new_secrets.delete(session.id_hash)
        await self.step_up.spend(session)
        return await self._render(request, session, done="totp_added")
