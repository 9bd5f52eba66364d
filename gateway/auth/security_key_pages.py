"""The JSON endpoints `webauthn.js` calls for security keys, under /_gateway/webauthn/.

Three places use them:

- the 2FA page, verify stage (`login/...`): sign in with a key instead of a code. A wrong
  or foreign assertion is a wrong attempt, on the same path as a wrong code (attempts
  left, lockout counting, the pending login ended after too many).
- the 2FA page, enroll stage (`enroll/...`): a key as the first factor, instead of the
  authenticator app's QR code (only after the invite, like the QR code).
- the account page (`account/...`): list, add and remove keys. Adding or removing needs a
  current second factor first (gateway.auth.account_step_up: a fresh TOTP code or an
  assertion of one of the user's keys, bound to the session, spent by the change).

Every endpoint is POST with a JSON body (cross-site pages cannot send one without a CORS
preflight, which is never granted), must come from the gateway's own origin, and acts
only on the pending login or device session named by the browser's cookie.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.access.origin_check import same_origin
from gateway.auth.account_step_up import AccountStepUp, Proof
from gateway.auth.challenge import PREFIX, ChallengePages
from gateway.auth.events import LoginEvents
from gateway.auth.pending import PendingLogin
from gateway.auth.security_keys import CeremonyError, SecurityKeys, clean_label, rp_id_for
from gateway.auth.users import SecurityKey
from gateway.policy.schema import Policy
from gateway.proxy.exchange import CLIENT, Addon
from gateway.sessions.cookies import SESSION_COOKIE, cookie_value
from gateway.sessions.manager import SessionManager
from gateway.sessions.model import token_hash

log = structlog.get_logger("gateway.auth.webauthn")

BASE = PREFIX + "webauthn/"
MAX_BODY = 64 * 1024
SECURITY_KEY_LOGIN = "password+security_key"


def _json(data: dict, status: int = 200) -> web.Response:
    response = web.json_response(data, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _error(error: str, status: int, **extra) -> web.Response:
    return _json({"error": error, **extra}, status=status)


def _key_json(key: SecurityKey) -> dict:
    return {
        "id": key.id,
        "label": key.label or "",
        "created": key.created_at.date().isoformat() if key.created_at else None,
        "last_used": key.last_used_at.date().isoformat() if key.last_used_at else None,
    }


# What a failed ceremony tells the browser, and whether it counts as a wrong attempt.
_LOGIN_ERRORS = {
    "no_challenge": ("security_key_expired", False),
    "no_security_key": ("security_key_none", False),
}


def _at_stage(stage: str):
    """For a 2FA page endpoint: runs the handler only for a good body and a pending login at
    `stage`, as `handler(self, request, body, token, pending)`; otherwise answers the refusal."""

    def wrap(handler: Callable[..., Awaitable[web.StreamResponse]]):
        @functools.wraps(handler)
        async def checked(self: SecurityKeyPages, request: web.Request) -> web.StreamResponse:
            body = await self._body(request)
            if isinstance(body, web.Response):
                return body
            found = await self._pending(request, stage)
            if isinstance(found, web.Response):
                return found
            token, pending = found
            return await handler(self, request, body, token, pending)

        return checked

    return wrap


def _signed_in(handler: Callable[..., Awaitable[web.StreamResponse]]):
    """For an account page endpoint: runs the handler only for a good body and a live device
    session, as `handler(self, request, body, session)`; otherwise answers the refusal."""

    @functools.wraps(handler)
    async def checked(self: SecurityKeyPages, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        session = await self._session(request)
        if session is None:
            return _error("no_session", 401, login=self.policy().login.page_url())
        return await handler(self, request, body, session)

    return checked


class SecurityKeyPages(Addon):
    def __init__(
        self,
        policy: Callable[[], Policy],
        keys: SecurityKeys,
        challenge: ChallengePages,
        sessions: SessionManager,
        events: LoginEvents,
        step_up: AccountStepUp,
    ) -> None:
        self.policy = policy
        self.keys = keys
        self.challenge = challenge
        self.users = challenge.users
        self.sessions = sessions
        self.events = events
        self.step_up = step_up

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(BASE + "login/status", self.login_status),
            web.post(BASE + "login/options", self.login_options),
            web.post(BASE + "login", self.login),
            web.post(BASE + "enroll/options", self.enroll_options),
            web.post(BASE + "enroll", self.enroll),
            web.post(BASE + "account/keys", self.account_keys),
            web.post(BASE + "account/confirm/options", self.confirm_options),
            web.post(BASE + "account/register/options", self.register_options),
            web.post(BASE + "account/register", self.register),
            web.post(BASE + "account/remove", self.remove),
            web.post(BASE + "account/recovery-codes", self.new_recovery_codes),
        ]

    # -- common checks ---------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict | web.Response:
        """The JSON body of a same-origin request while security keys are enabled."""
        if not self.keys.enabled():
            return _error("not_found", 404)
        if not same_origin(request, request[CLIENT].origin):
            return _error("forbidden_text", 403)
        if request.content_type != "application/json":
            return _error("bad_request", 415)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error("too_large", 413)
        raw = await request.read()  # bounded by the server's client_max_size
        if len(raw) > MAX_BODY:
            return _error("too_large", 413)
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            return _error("bad_request", 400)
        if not isinstance(data, dict):
            return _error("bad_request", 400)
        return data

    @staticmethod
    def _place(request: web.Request) -> tuple[str, str]:
        client = request[CLIENT]
        return rp_id_for(client.host), client.origin

    async def _pending(self, request: web.Request, stage: str):
        found = await self.challenge._pending(request)
        if found is None:
            return _error("no_pending_login", 401, login=self.policy().login.page_url())
        token, pending = found
        if pending.stage != stage:
            return _error("wrong_stage", 409, location=PREFIX + "2fa")
        return token, pending

    async def _session(self, request: web.Request):
        session_id = cookie_value(request.headers.get("Cookie"), SESSION_COOKIE)
        session = await self.sessions.get(session_id) if session_id else None
        if session is None or self.sessions.expiry_reason(session) is not None:
            return None
        record = await self.users.get(session.user)
        return session if record is not None and record.active else None

    # -- the 2FA page: verify stage --------------------------------------------------

    @_at_stage("verify")
    async def login_status(self, request: web.Request, body: dict, token: str, pending: PendingLogin) -> web.StreamResponse:
        return _json({"available": bool(await self.users.security_keys(pending.user))})

    @_at_stage("verify")
    async def login_options(self, request: web.Request, body: dict, token: str, pending: PendingLogin) -> web.StreamResponse:
        rp_id, origin = self._place(request)
        try:
            options = await self.keys.authentication_options(
                pending.user, purpose="login", binding=token_hash(token), rp_id=rp_id, origin=origin)
        except CeremonyError as exc:
            return _error(_LOGIN_ERRORS.get(exc.reason, ("security_key_invalid", False))[0], 400)
        return _json({"publicKey": options})

    @_at_stage("verify")
    async def login(self, request: web.Request, body: dict, token: str, pending: PendingLogin) -> web.StreamResponse:
        ip = request[CLIENT].ip
        pending.remember = body.get("remember") is True
        if (refused := await self.challenge.claim_attempt(request, token, pending, ip)) is not None:
            return refused
        try:
            await self.keys.authenticate(pending.user, body.get("credential"), purpose="login",
                                         binding=token_hash(token), origin=request[CLIENT].origin)
        except CeremonyError as exc:
            error, counts = _LOGIN_ERRORS.get(exc.reason, ("security_key_invalid", True))
            if not counts:
                await self.challenge.pending.refund_attempt(token, pending)
                return _error(error, 400)
            if exc.reason == "sign_count":
                log.warning("security key refused: counter went backwards (cloned key?)", user=pending.user, ip=ip)
            return await self.challenge._wrong(request, token, pending, ip, error)
        settled = await self.challenge.pending.take(token)
        if settled is None:  # a parallel request completed or ended it first
            return _error("no_pending_login", 401, login=self.policy().login.page_url())
        settled.login_type = SECURITY_KEY_LOGIN
        settled.remember = pending.remember
        return await self.challenge.completer.complete(request, settled, ip)

    # -- the 2FA page: enroll stage (a key as the first factor) ----------------------

    @_at_stage("enroll")
    async def enroll_options(self, request: web.Request, body: dict, token: str, pending: PendingLogin) -> web.StreamResponse:
        rp_id, origin = self._place(request)
        options = await self.keys.registration_options(
            pending.user, purpose="enroll", binding=token_hash(token), rp_id=rp_id, origin=origin,
            label=clean_label(body.get("label")))
        return _json({"publicKey": options})

    @_at_stage("enroll")
    async def enroll(self, request: web.Request, body: dict, token: str, pending: PendingLogin) -> web.StreamResponse:
        try:
            await self.keys.register(pending.user, body.get("credential"), purpose="enroll",
                                     binding=token_hash(token), origin=request[CLIENT].origin)
        except CeremonyError as exc:
            return _error(_registration_error(exc), 400)
        pending.recovery_codes = await self.users.generate_recovery_codes(pending.user)
        pending.stage, pending.enroll_secret = "recovery_codes", None
        pending.login_type = SECURITY_KEY_LOGIN
        await self.challenge.pending.save(token, pending)
        await self.events.attempt(request[CLIENT].ip, pending.user, "enrolled", SECURITY_KEY_LOGIN,
                                  "first second factor enrolled")
        return _json({"status": "ok", "location": PREFIX + "2fa"})

    # -- the account page ------------------------------------------------------------

    async def _listing(self, user: str) -> dict:
        keys = await self.users.security_keys(user)
        record = await self.users.get(user)
        return {"keys": [_key_json(k) for k in keys], "has_totp": bool(record and record.has_totp)}

    async def _proof(self, request: web.Request, body: dict, session) -> web.Response | None:
        """None when the body proves a current second factor (or an earlier proof of this
        session is still fresh), else the refusal."""
        proof = Proof.read(body.get("code"), body.get("assertion"))
        error = await self.step_up.require(session, proof, ip=request[CLIENT].ip, origin=request[CLIENT].origin)
        if error is None:
            return None
        return _error(error, _PROOF_STATUS.get(error, 401))

    @_signed_in
    async def account_keys(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        return _json(await self._listing(session.user))

    @_signed_in
    async def confirm_options(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        """Options for proving the user holds one of their keys before a change."""
        rp_id, origin = self._place(request)
        try:
            options = await self.keys.authentication_options(
                session.user, purpose="confirm", binding=session.id_hash, rp_id=rp_id, origin=origin)
        except CeremonyError:
            return _error("security_key_none", 400)
        return _json({"publicKey": options})

    @_signed_in
    async def register_options(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        refused = await self._proof(request, body, session)
        if refused is not None:
            return refused
        rp_id, origin = self._place(request)
        options = await self.keys.registration_options(
            session.user, purpose="register", binding=session.id_hash, rp_id=rp_id, origin=origin,
            label=clean_label(body.get("label")))
        return _json({"publicKey": options})

    @_signed_in
    async def register(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        if not await self.step_up.fresh(session):  # the options' proof, spent or lapsed
            return _error("proof_required", 400)
        try:
            key = await self.keys.register(session.user, body.get("credential"), purpose="register",
                                           binding=session.id_hash, origin=request[CLIENT].origin)
        except CeremonyError as exc:
            return _error(_registration_error(exc), 400)
        await self.step_up.spend(session)
        log.info("security key added", user=session.user, ip=request[CLIENT].ip, key=key.id, label=key.label)
        return _json({"status": "ok", "key": _key_json(key), **await self._listing(session.user)})

    @_signed_in
    async def remove(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        key_id = body.get("id")
        if not isinstance(key_id, int) or isinstance(key_id, bool):
            return _error("bad_request", 400)
        listing = await self._listing(session.user)
        if not any(k["id"] == key_id for k in listing["keys"]):
            return _error("not_found", 404)
        if not listing["has_totp"] and len(listing["keys"]) == 1:
            return _error("security_key_last", 409)
        refused = await self._proof(request, body, session)
        if refused is not None:
            return refused
        await self.step_up.spend(session)
        if not await self.users.remove_security_key(session.user, key_id):
            return _error("not_found", 404)
        log.info("security key removed", user=session.user, ip=request[CLIENT].ip, key=key_id)
        return _json({"status": "ok", **await self._listing(session.user)})


    @_signed_in
    async def new_recovery_codes(self, request: web.Request, body: dict, session) -> web.StreamResponse:
        """New recovery codes for a user whose proof may be a key (no authenticator app)."""
        refused = await self._proof(request, body, session)
        if refused is not None:
            return refused
        await self.step_up.spend(session)
        codes = await self.users.generate_recovery_codes(session.user)
        log.info("recovery codes replaced", user=session.user, ip=request[CLIENT].ip)
        return _json({"status": "ok", "codes": codes, **await self._listing(session.user)})


_PROOF_STATUS = {"proof_required": 400, "security_key_expired": 400, "security_key_wait": 429, "too_many_attempts": 429}


def _registration_error(exc: CeremonyError) -> str:
    return {
        "no_challenge": "security_key_expired",
        "already_registered": "security_key_already",
        "inactive": "forbidden_text",
    }.get(exc.reason, "security_key_invalid")
