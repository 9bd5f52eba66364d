"""The gateway's own login pages: second factor, enrollment, recovery codes, logout.

They run on the reserved prefix /_gateway/ and act on the pending login the interceptor
created. Every form carries a token bound to that pending login (and the request must
come from the gateway's own origin); codes are compared in constant time; five wrong
codes end the pending login and count against the user.

Every code (app code, recovery code, support access code, invite code, enrollment code,
security key assertion) first claims one of the pending login's attempts from a counter
in the ephemeral store (`claim_attempt`): the claim is one atomic increment, shared by all
workers, so however many codes arrive in parallel, at most `max_attempts` are ever
evaluated, and the login ends as its attempts run out. A locked user or address is
refused before any claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable

import structlog
from aiohttp import web

from gateway.access.origin_check import same_origin
from gateway.auth.events import LoginEvents
from gateway.auth.pending import PendingLogin, PendingLogins
from gateway.auth.remember import RememberedDevices
from gateway.pages.render import see_other, choose_language, form_or_json, render_page, translator, wants_json
from gateway.policy.schema import Policy
from gateway.proxy.exchange import CLIENT, Addon, Exchange
from gateway.readers.redirects import is_local_location
from gateway.risk.lockout import Lockouts
from gateway.sessions.cookies import (
    PENDING_COOKIE,
    SESSION_COOKIE,
    NOTICE_COOKIE,
    clear_cookie,
    cookie_value,
    set_cookie,
)
from gateway.sessions.ending import session_ended
from gateway.sessions.manager import SessionManager, TooManyDevices
from gateway.sessions.model import LogoutSubject

log = structlog.get_logger("gateway.auth")

PREFIX = "/_gateway/"
PENDING_USER = web.RequestKey("pending_user", str)  # set when a page found its pending login
CHALLENGE = PREFIX + "2fa"
LOGOUT = PREFIX + "logout"
LOGIN_TYPE_BY_STAGE = {"verify": "password+totp", "recovery": "recovery_code", "support": "support_access"}


class LoginCompleter:
    """Turns a settled pending login into a device session and the PMS's withheld answer."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        sessions: SessionManager,
        lockouts: Lockouts,
        events: LoginEvents,
        remembered: RememberedDevices,
        users,
        step_ups=None,  # StepUps: a settled step-up replays its held request instead of signing in
    ) -> None:
        self.step_ups = step_ups
        self.policy = policy
        self.sessions = sessions
        self.lockouts = lockouts
        self.events = events
        self.remembered = remembered
        self.users = users

    async def complete(
        self,
        request: web.BaseRequest,
        pending: PendingLogin,
        ip: str,
        *,
        page: str | None = None,
        expires_at: float | None = None,
        **page_context,
    ) -> web.StreamResponse:
        """`expires_at` (epoch seconds) ends the session earlier than the group's lifetime."""
        if pending.step_up is not None and self.step_ups is not None:
            log.info("step-up second factor passed", user=pending.user, ip=ip)
            return await self.step_ups.passed(request, pending)
        policy = self.policy()
        secure = _secure(request)
        record = await self.users.get(pending.user)
        if record is not None and not record.active:  # deactivated while at the second step
            await self.abandon(pending)
            await self.events.pending_attempt(pending, ip, "refused", pending.login_type, "deactivated")
            return _message(request, policy, 403, "notice_deactivated", link=policy.login.page_url())
        try:
            session_id, _ = await self.sessions.create(
                user=pending.user,
                group=pending.group,
                device_id=pending.device_id,
                ip=ip,
                user_agent=pending.user_agent,
                login_type=pending.login_type,
                vault=pending.vault,
                expires_at=expires_at,
            )
        except TooManyDevices:
            await self.abandon(pending)
            await self.events.pending_attempt(pending, ip, "refused", pending.login_type, "signed in on another device")
            return _message(request, policy, 409, "too_many_devices", link=policy.login.page_url())
        await self.lockouts.clear_user(pending.user, ip)
        await self.events.pending_attempt(pending, ip, "success", pending.login_type)
        location = pending.location or "/"
        if not is_local_location(location, request[CLIENT].origin):
            location = "/"  # the PMS's withheld redirect, judged again: never off-site
        if pending.json or wants_json(request):
            response: web.StreamResponse = web.json_response({"status": "ok", "location": location})
        elif page is not None:
            response = render_page(request, page, property_name=policy.property, location=location, **page_context)
        else:
            response = web.Response(status=pending.status if 300 <= pending.status < 400 else 303)
            response.headers["Location"] = location
        for cookie in pending.set_cookies:
            response.headers.add("Set-Cookie", cookie)
        response.headers.add("Set-Cookie", set_cookie(SESSION_COOKIE, session_id, secure=secure))
        response.headers.add("Set-Cookie", clear_cookie(PENDING_COOKIE, secure=secure, path=PREFIX))
        rules = policy.sessions_for(pending.group)
        if pending.remember and rules.remember_device is not False and expires_at is None:
            response.headers.add(
                "Set-Cookie", self.remembered.issue(pending.user, pending.device_id, rules.remember_device, secure=secure)
            )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def abandon(self, pending: PendingLogin) -> None:
        """A pending login that will not complete: its PMS session must not live on."""
        self.sessions.end_upstream(
            pending.vault, LogoutSubject(pending.user, None, pending.user_agent or None, "pending login abandoned")
        )


class ChallengePages(Addon):
    def __init__(
        self,
        policy: Callable[[], Policy],
        users,
        pending: PendingLogins,
        completer: LoginCompleter,
        lockouts: Lockouts,
        events: LoginEvents,
        form_key: bytes,
        clock: Callable[[], float] = time.time,
        support=None,  # SupportAccess: the access codes of vendor support accounts
    ) -> None:
        self.support = support
        self.policy = policy
        self.users = users
        self.pending = pending
        self.completer = completer
        self.lockouts = lockouts
        self.events = events
        self.form_key = form_key
        self.clock = clock

    async def startup(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        self._sweeper.cancel()

    async def sweep(self) -> int:
        """End the PMS sessions of logins abandoned between password and second factor."""
        abandoned = await self.pending.take_abandoned()
        for pending in abandoned:
            await self.events.pending_attempt(pending, pending.ip, "second_factor_failed", None, "abandoned")
            await self.completer.abandon(pending)
        return len(abandoned)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                await self.sweep()
            except Exception:
                log.exception("pending login sweep failed")

    async def done(self, ex: Exchange) -> None:
        if ex.user is None and (user := ex.request.get(PENDING_USER)) is not None:
            ex.user = user

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(CHALLENGE, self.show),
            web.post(CHALLENGE, self.submit),
            web.get(LOGOUT, self.logout_page),
            web.post(LOGOUT, self.logout),
        ]

    # -- helpers -----------------------------------------------------------------------

    def _form_token(self, bound_to: str) -> str:
        return hmac.new(self.form_key, bound_to.encode(), hashlib.sha256).hexdigest()

    def _render(self, request: web.BaseRequest, token: str, pending: PendingLogin, *, status: int = 200, error: str | None = None, **extra) -> web.Response:
        policy = self.policy()
        context = dict(
            stage=pending.stage,
            user=pending.user,
            csrf=self._form_token(token),
            error=error,
            remember_allowed=policy.sessions_for(pending.group).remember_device is not False,
            attempts_left=policy.second_factor.max_attempts - pending.attempts,
            security_key="security_key" in policy.second_factor.methods,
            has_totp=pending.has_totp,
        )
        if pending.stage == "enroll" and pending.enroll_secret:
            uri = self.users.provisioning_uri(pending.user, pending.enroll_secret)
            context.update(secret=pending.enroll_secret, qr=self.users.qr_svg(uri), otpauth=uri)
        if pending.stage == "recovery_codes":
            context.update(codes=pending.recovery_codes)
        context.update(extra)
        return render_page(request, "challenge.html", status=status, property_name=policy.property, **context)

    async def _page(self, request: web.BaseRequest, token: str, pending: PendingLogin) -> web.Response:
        """The page of the login's stage. Recovery codes are on it once: they are forgotten
        as the page is made, so a reload (or a second tab) shows that they were shown."""
        page = self._render(request, token, pending)
        page.headers["Cache-Control"] = "no-store"
        if pending.recovery_codes:
            pending.recovery_codes = []
            await self._save(token, pending)
        return page

    async def _pending(self, request: web.Request) -> tuple[str, PendingLogin] | None:
        token = cookie_value(request.headers.get("Cookie"), PENDING_COOKIE)
        if not token:
            return None
        pending = await self.pending.get(token)
        if pending is None:
            return None
        request[PENDING_USER] = pending.user  # the page's audit record names who is signing in
        return token, pending

    def _expired(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy()
        if wants_json(request):
            return web.json_response({"error": "no_pending_login", "login": policy.login.page_url()}, status=401)
        response = see_other(policy.login.page_url())
        response.headers.add("Set-Cookie", set_cookie(NOTICE_COOKIE, "required", secure=_secure(request), max_age=120))
        return response

    async def _save(self, token: str, pending: PendingLogin) -> None:
        await self.pending.save(token, pending)

    # -- handlers ----------------------------------------------------------------------

    async def show(self, request: web.Request) -> web.StreamResponse:
        found = await self._pending(request)
        if found is None:
            return self._expired(request)
        token, pending = found
        if pending.stage == "enroll" and not pending.enroll_secret:
            pending.enroll_secret = self.users.new_totp_secret()
            await self._save(token, pending)
        return await self._page(request, token, pending)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        found = await self._pending(request)
        if found is None:
            return self._expired(request)
        token, pending = found
        form = await form_or_json(request, stringify_json=True)
        ip = request[CLIENT].ip
        policy = self.policy()
        # A JSON body cannot be sent cross-site without a CORS preflight, which is never granted.
        if request.content_type != "application/json" and (
            not same_origin(request, request[CLIENT].origin)
            or not hmac.compare_digest(form.get("csrf", ""), self._form_token(token))
        ):
            return _message(request, policy, 403, "forbidden_text")
        pending.remember = form.get("remember") == "on"
        action = form.get("action", "verify")
        if pending.stage == "support":
            return await self._support(request, token, pending, form.get("access_code", ""), ip)
        if action == "recovery" and pending.stage == "verify":
            return await self._recovery(request, token, pending, form.get("recovery_code", ""), ip)
        if pending.stage == "verify":
            return await self._verify(request, token, pending, form.get("code", ""), ip)
        if pending.stage in ("invite", "enroll"):
            if (refused := await self.claim_attempt(request, token, pending, ip)) is not None:
                return refused
        if pending.stage == "invite":
            if await self.users.redeem_invite(pending.user, form.get("invite_code", "").strip()):
                pending.stage = "enroll"
                pending.enroll_secret = self.users.new_totp_secret()
                await self._save(token, pending)
                return self._render(request, token, pending)
            return await self._wrong(request, token, pending, ip, "invite_invalid")
        if pending.stage == "enroll":
            secret = pending.enroll_secret or ""
            if secret and await self.users.enroll_totp(pending.user, secret, form.get("code", "").strip()):
                pending.recovery_codes = await self.users.generate_recovery_codes(pending.user)
                pending.stage, pending.enroll_secret = "recovery_codes", None
                await self.events.attempt(ip, pending.user, "enrolled", "password+totp", "first second factor enrolled")
                return await self._page(request, token, pending)
            return await self._wrong(request, token, pending, ip, "code_invalid")
        if pending.stage == "recovery_codes" and action == "continue":
            settled = await self.pending.take(token)
            if settled is None:
                return self._expired(request)
            if settled.login_type != "password+security_key":  # enrolled with a security key
                settled.login_type = "password+totp"
            return await self.completer.complete(request, settled, ip)
        return await self._page(request, token, pending)

    async def _verify(self, request, token: str, pending: PendingLogin, code: str, ip: str) -> web.StreamResponse:
        if (refused := await self.claim_attempt(request, token, pending, ip)) is not None:
            return refused
        result = await self.users.verify_totp(pending.user, code.strip().replace(" ", ""))
        if not result.ok:
            return await self._wrong(request, token, pending, ip, "code_replayed" if result.reason == "replayed" else "code_invalid")
        settled = await self.pending.take(token)
        if settled is None:  # a parallel request completed or ended it first
            return self._expired(request)
        settled.login_type = "password+totp"
        settled.remember = pending.remember
        return await self.completer.complete(request, settled, ip)

    async def _recovery(self, request, token: str, pending: PendingLogin, code: str, ip: str) -> web.StreamResponse:
        if (refused := await self.claim_attempt(request, token, pending, ip)) is not None:
            return refused
        remaining = await self.users.use_recovery_code(pending.user, code.strip())
        if remaining is None:
            return await self._wrong(request, token, pending, ip, "recovery_invalid")
        settled = await self.pending.take(token)
        if settled is None:
            return self._expired(request)
        settled.login_type = "recovery_code"
        return await self.completer.complete(request, settled, ip, page="recovery_used.html", remaining=remaining)

    async def _support(self, request, token: str, pending: PendingLogin, code: str, ip: str) -> web.StreamResponse:
        """A vendor support account: the operator's one-time access code replaces the second factor."""
        if (refused := await self.claim_attempt(request, token, pending, ip)) is not None:
            return refused
        expires = await self.support.redeem(pending.user, code) if self.support is not None else None
        if expires is None:
            return await self._wrong(request, token, pending, ip, "support_code_invalid")
        settled = await self.pending.take(token)
        if settled is None:
            return self._expired(request)
        settled.login_type, settled.remember = "support_access", False
        response = await self.completer.complete(request, settled, ip, expires_at=expires.timestamp())
        if response.status < 400:
            await self.support.alert(
                f"Support access used: {settled.user} signed in from {ip}",
                [f"Account: {settled.user}", f"Address: {ip}",
                 f"Session ends: {expires.strftime('%Y-%m-%d %H:%M UTC')}"],
                settled.user, ip,
            )
        return response

    async def claim_attempt(self, request, token: str, pending: PendingLogin, ip: str) -> web.StreamResponse | None:
        """Call before evaluating any code: None when the code may be evaluated, else the
        refusal. A locked user or address is refused (a hard lock also ends the pending
        login; a wait inside the known networks keeps it); then one attempt is claimed
        atomically in the store, and a claim past `max_attempts` ends the login unevaluated."""
        policy = self.policy()
        lock = await self.lockouts.current(pending.user, ip)
        if lock is not None:
            if lock.delay:
                await self.events.pending_attempt(pending, ip, "locked_out", None, f"{lock.scope} slowed down")
                if wants_json(request):
                    response: web.StreamResponse = web.json_response(
                        {"error": "wait", "retry_after": int(lock.retry_after)}, status=429
                    )
                else:
                    response = self._render(request, token, pending, status=429, error="security_key_wait")
            else:
                await self._end(token, pending, ip, "locked_out", f"{lock.scope} locked")
                response = self._ended(request, policy, 429)
            response.headers["Retry-After"] = lock.retry_after
            return response
        pending.attempts = await self.pending.claim_attempt(token, pending)
        if pending.attempts > policy.second_factor.max_attempts:
            await self._end(token, pending, ip, "refused", "no attempts left")
            return self._ended(request, policy, 401)
        return None

    async def _end(self, token: str, pending: PendingLogin, ip: str, outcome: str, reason: str) -> None:
        """End the pending login (once, whichever request gets there first) and its PMS session."""
        ended = await self.pending.take(token)
        await self.events.pending_attempt(pending, ip, outcome, None, reason)
        if ended is not None:
            await self.completer.abandon(ended)

    def _ended(self, request, policy: Policy, status: int) -> web.StreamResponse:
        response = _message(request, policy, status, "too_many_attempts", link=policy.login.page_url())
        response.headers.add("Set-Cookie", clear_cookie(PENDING_COOKIE, secure=_secure(request), path=PREFIX))
        return response

    async def _wrong(self, request, token: str, pending: PendingLogin, ip: str, error: str) -> web.StreamResponse:
        """A code evaluated and found wrong; its attempt was claimed by `claim_attempt`."""
        policy = self.policy()
        await self.lockouts.record_failure(pending.user, ip)  # every wrong code counts toward lockout
        if pending.attempts >= policy.second_factor.max_attempts:
            await self._end(token, pending, ip, "second_factor_failed", "too many wrong codes")
            return self._ended(request, policy, 401)
        await self.events.pending_attempt(pending, ip, "second_factor_failed", None, error)
        if wants_json(request):
            return web.json_response({"error": error, "attempts_left": policy.second_factor.max_attempts - pending.attempts}, status=401)
        return self._render(request, token, pending, status=401, error=error)

    async def logout_page(self, request: web.Request) -> web.StreamResponse:
        session_id = cookie_value(request.headers.get("Cookie"), SESSION_COOKIE)
        policy = self.policy()
        return render_page(request, "logout.html", property_name=policy.property, csrf=self._form_token("logout:" + (session_id or "")))

    async def logout(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy()
        session_id = cookie_value(request.headers.get("Cookie"), SESSION_COOKIE) or ""
        form = await form_or_json(request, stringify_json=True)
        if not same_origin(request, request[CLIENT].origin) or not hmac.compare_digest(
            form.get("csrf", ""), self._form_token("logout:" + session_id)
        ):
            return _message(request, policy, 403, "forbidden_text")
        session = await self.completer.sessions.get(session_id) if session_id else None
        if session is not None:
            await self.completer.sessions.end(session, "logout")
        response = see_other(policy.login.page_url())
        secure = _secure(request)
        session_ended(response.headers, secure=secure)
        response.headers.add("Set-Cookie", set_cookie(NOTICE_COOKIE, "logout", secure=secure, max_age=120))
        return response


def _secure(request: web.BaseRequest) -> bool:
    return request[CLIENT].scheme == "https"


def _message(request: web.BaseRequest, policy: Policy, status: int, key: str, link: str | None = None) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": key}, status=status)
    t = translator(choose_language(request.headers.get("Accept-Language")))
    return render_page(request, "message.html", status=status, property_name=policy.property, message=t(key), link=link)
