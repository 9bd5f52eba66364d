"""The PMS's other password forms (`login.password_forms`): re-authentication, password
change, password reset. Forwarded under the rules of their kind, never a new identity.

- `reauth` and `change` are accepted only inside a live gateway session (the session guard
  has run) and go to the PMS with that session's vaulted cookies. A username field must
  name the session's own user. A locked user is refused before the password goes
  anywhere; an answer the form's success rule (else `login.success`) calls a refusal
  counts toward the user's lockout, as a wrong login password does.
- `reauth` with `step_up: true` first asks the gateway's own second factor again
  (`gateway.auth.step_up`); after every reauth the PMS is asked who is signed in
  (`login.identity`), and a session whose PMS user changed is ended.
- `change`: once the PMS accepted it, every other gateway session of the user ends.
- `reset` (the page an e-mailed link opens) needs no session and never uses one: it goes
  up without vaulted cookies, and a session cookie the PMS sets in answer (many sign the
  user in after a reset) is stripped and that PMS session logged out, after the PMS has
  been asked whose it is. Once a reset succeeded, every gateway session of that user (read
  that way, or named by the form's username field) ends.

The body is read by the one credential reader (`read_password_form`) under
`login.charset`; a form it cannot read with certainty is refused with 400, like a login.
Everywhere else a password is still refused (`LoginInterceptor._refuse_stray_password`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway.audit.path_secrets import path_for_logs
from gateway.auth.events import LoginEvents
from gateway.auth.login import CHALLENGE_PATH, password_accepted
from gateway.auth.pending import PendingLogin, PendingLogins
from gateway.auth.step_up import StepUps, clear_step_up
from gateway.pages.render import see_other, staff_time, wants_json
from gateway.policy.schema import PasswordForm, Policy
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.server import PolicyGetter
from gateway.readers.credentials import AmbiguousCredentials, read_password_form
from gateway.risk.lockout import Lockouts
from gateway.sessions.cookies import PENDING_COOKIE, SESSION_COOKIE, STEP_UP_COOKIE, CookiePolicy, clear_cookie, cookie_value, set_cookie
from gateway.sessions.identity import IdentityCheck
from gateway.sessions.manager import SessionManager
from gateway.sessions.model import DeviceSession

log = structlog.get_logger("gateway.auth")

NOTE = "password_form"
SESSION_NOTE = "session"  # the session guard's note: a reset takes it away (it never uses a session)


@dataclass
class FormRequest:
    """A password form request let through, for the answer's rules."""

    form: PasswordForm
    user: str | None  # the session's user (reauth, change); the form's username field (reset)
    session: DeviceSession | None


class PasswordForms(Addon):
    """Request side after the session guard; `ResetAnswers` (before it) keeps a reset's
    PMS session cookies from reaching the guard's vault handling."""

    def __init__(
        self,
        policy: PolicyGetter,
        users,
        sessions: SessionManager,
        lockouts: Lockouts,
        events: LoginEvents,
        pending: PendingLogins,
        step_ups: StepUps,
        identity: IdentityCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.users = users
        self.sessions = sessions
        self.lockouts = lockouts
        self.events = events
        self.pending = pending
        self.step_ups = step_ups
        self.identity = identity
        self.clock = clock

    def reset_answers(self) -> Addon:
        """The addon to place before the session guard (see `ResetAnswers`)."""
        return ResetAnswers(self)

    # -- the request ---------------------------------------------------------------------

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.policy()
        if not policy.login.password_forms:
            return None
        form = policy.login.password_form_for(ex.path.path, ex.request.method)
        if form is None:
            return None
        if form.kind == "reset":
            return await self._reset(ex, policy, form)
        session: DeviceSession | None = ex.notes.get(SESSION_NOTE)
        if session is None:  # only a path the operator also made public gets here
            ex.deny("refused", f"{form.kind} form without a gateway session")
            return error_response(ex.request, 401, ex.request_id, policy.property, detail="session required")
        if form.step_up and (token := cookie_value(ex.request.headers.get("Cookie"), STEP_UP_COOKIE)):
            target = ex.path.encoded + ("?" + ex.query if ex.query else "")
            held = await self.step_ups.take(token, session.id_hash, ex.path.path, target)
            if held is not None:  # the second factor was passed: forward the form as first posted
                ex.body = held.raw_body
                ex.upstream_headers["Content-Type"] = held.content_type
                ex.upstream_headers["Content-Length"] = str(len(ex.body))
                ex.upstream_headers.popall("Transfer-Encoding", None)
                ex.notes[NOTE] = FormRequest(form, session.user, session)
                ex.notes["step_up_replayed"] = True
                return None
        try:
            named = await read_password_form(ex, form, policy.login)
            if named is not None and self.users.normalise(named) != session.user:
                ex.deny("refused", f"{form.kind} form names another user than the session's")
                return error_response(ex.request, 403, ex.request_id, policy.property, detail="another user named")
        except AmbiguousCredentials as exc:
            ex.deny("refused", f"{form.kind} form refused: {exc}")
            return error_response(ex.request, exc.status, ex.request_id, policy.property, detail=str(exc))
        except ValueError as exc:  # a username the normaliser refuses
            ex.deny("refused", f"{form.kind} form refused: {exc}")
            return error_response(ex.request, 400, ex.request_id, policy.property, detail=str(exc))
        lock = await self.lockouts.current(session.user, ex.client_ip)
        if lock is not None:
            ex.deny("locked_out", f"{lock.scope} locked: {form.kind} form refused")
            now = self.clock()
            until = staff_time(now + int(lock.retry_after), policy.property_timezone, now=now)
            response = error_response(ex.request, 429, ex.request_id, policy.property, key="refused_locked",
                                      values={"until": until})
            response.headers["Retry-After"] = lock.retry_after
            return response
        if form.step_up:
            return await self._ask_second_factor(ex, policy, session)
        ex.notes[NOTE] = FormRequest(form, session.user, session)
        return None

    async def _ask_second_factor(self, ex: Exchange, policy: Policy, session: DeviceSession) -> web.StreamResponse:
        """Hold the form and send the browser to the second-factor page (auth/step_up.py)."""
        assert ex.body is not None  # read whole by read_password_form
        target = ex.path.encoded + ("?" + ex.query if ex.query else "")
        token = await self.step_ups.hold(
            session_hash=session.id_hash, user=session.user, path=ex.path.path, target=target,
            content_type=ex.request.headers.get("Content-Type", ""), body=ex.body,
        )
        record = await self.users.get(session.user)
        pending = PendingLogin(
            user=session.user, group=session.group, ip=ex.client_ip, device_id=session.device_id,
            user_agent=session.user_agent, created=self.clock(), vault={}, status=303, location=None,
            set_cookies=[], json=wants_json(ex.request), stage="verify", login_type="step_up",
            has_totp=record is None or record.has_totp or not record.has_security_key, step_up=token,
        )
        pending_token = await self.pending.create(pending)
        ex.deny("challenged", "second factor asked again before a re-authentication (step_up)")
        if wants_json(ex.request):
            response: web.StreamResponse = web.json_response(
                {"status": "second_factor_required", "next": CHALLENGE_PATH}, status=401
            )
        else:
            response = see_other(CHALLENGE_PATH)
        secure = ex.scheme == "https"
        ttl = int(policy.second_factor.pending_login_timeout)
        response.headers.add("Set-Cookie", set_cookie(PENDING_COOKIE, pending_token, secure=secure, max_age=ttl,
                                                      path="/_gateway/", same_site="Strict"))
        response.headers.add("Set-Cookie", set_cookie(STEP_UP_COOKIE, token, secure=secure, max_age=ttl,
                                                      same_site="Strict"))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Request-Id"] = ex.request_id
        return response

    async def _reset(self, ex: Exchange, policy: Policy, form: PasswordForm) -> web.StreamResponse | None:
        """A reset link's form: forwarded as if no session existed."""
        if ex.notes.pop(SESSION_NOTE, None) is not None:
            header = CookiePolicy(policy.login).upstream_cookie_header(ex.request.headers.get("Cookie"), {})
            if header is None:
                ex.upstream_headers.popall("Cookie", None)
            else:
                ex.upstream_headers["Cookie"] = header
        try:
            named = await read_password_form(ex, form, policy.login)
            user = self.users.normalise(named) if named is not None else None
        except AmbiguousCredentials as exc:
            ex.deny("refused", f"reset form refused: {exc}")
            return error_response(ex.request, exc.status, ex.request_id, policy.property, detail=str(exc))
        except ValueError as exc:
            ex.deny("refused", f"reset form refused: {exc}")
            return error_response(ex.request, 400, ex.request_id, policy.property, detail=str(exc))
        ex.notes[NOTE] = FormRequest(form, user, None)
        return None

    # -- the PMS's answer (reauth, change) -------------------------------------------------

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        note: FormRequest | None = ex.notes.get(NOTE)
        if ex.notes.get("step_up_replayed"):
            clear_step_up(answer.headers, secure=ex.scheme == "https")
        if note is None or note.session is None or note.user is None:
            return None
        policy = self.policy()
        form, session, user = note.form, note.session, note.user
        accepted = await password_accepted(answer, form.success or policy.login.success, ex.public_origin, ex.path.path)
        if not accepted:
            lock = await self.lockouts.record_failure(user, ex.client_ip)
            if lock is not None:
                await self.events.lockout(ex, user, lock.scope)
            ex.deny("password_refused", f"{form.kind} password refused by the PMS")
        if form.kind == "reauth" and self.identity is not None and self.identity.rule() is not None:
            reading = await self.identity.read(session.vault, ex)
            if not reading.is_user(user):
                await self.sessions.end(session, "revoked")
                ex.deny("denied", f"identity mismatch after reauth: {reading.describe()}, not {user!r}; session ended")
                await self.identity.alert(user, reading, ex.client_ip, f"reauth {ex.path.path}")
                response = error_response(ex.request, 403, ex.request_id, policy.property,
                                          detail="the PMS signed in another user: this session was ended")
                response.headers.add("Set-Cookie", clear_cookie(SESSION_COOKIE, secure=ex.scheme == "https"))
                return response
        if form.kind == "change" and accepted:
            ended = await self.end_sessions_of(user, keep=session.id_hash)
            ex.deny("allowed", f"password changed; {ended} other session(s) of the user ended")
        return None

    async def end_sessions_of(self, user: str, keep: str | None = None) -> int:
        """End every gateway session of `user` but `keep` (their PMS sessions too)."""
        ended = 0
        for other in await self.sessions.sessions_of(user):
            if other.id_hash != keep:
                ended += await self.sessions.end(other, "revoked")
        if ended:
            log.info("sessions ended after a password change or reset", user=user, ended=ended)
        return ended

    # -- the PMS's answer (reset) ----------------------------------------------------------

    async def reset_answer(self, ex: Exchange, answer: UpstreamAnswer) -> None:
        """Strip the PMS session a reset answer opens (asking the PMS whose it is first),
        and after a successful reset end every gateway session of that user."""
        note: FormRequest | None = ex.notes.get(NOTE)
        if note is None or note.form.kind != "reset":
            return
        policy = self.policy()
        updates, passed = CookiePolicy(policy.login).take_vaulted(answer.headers.getall("Set-Cookie", []))
        vault = {name: value for name, value in updates.items() if value is not None}
        if updates:
            answer.headers.popall("Set-Cookie", None)
            for value in passed:
                answer.headers.add("Set-Cookie", value)
        users = {note.user} - {None}
        if vault:
            if self.identity is not None and self.identity.rule() is not None:
                reading = await self.identity.read(vault, ex)
                if reading.user is not None:
                    users.add(reading.user)
            self.sessions.end_upstream(vault)  # the PMS session the reset opened: logged out
        accepted = await password_accepted(answer, note.form.success or policy.login.success, ex.public_origin,
                                           ex.path.path)
        if not accepted:
            ex.deny("password_refused", "password reset refused by the PMS")
            return
        if not users:
            log.warning("password reset accepted by the PMS, but whose is unknown: no session was ended "
                        "(set login.identity, or the reset form's username_field)",
                        path=path_for_logs(ex.path.path, policy.audit.path_secrets))
            ex.deny("allowed", "password reset (user unknown to the gateway)")
            return
        ended = 0
        for user in sorted(users):  # type: ignore[arg-type]
            ended += await self.end_sessions_of(user)
        ex.user = ex.user or (sorted(users)[0] if len(users) == 1 else None)  # type: ignore[arg-type]
        ex.deny("allowed", f"password reset; {ended} session(s) of {', '.join(sorted(users))} ended")  # type: ignore[arg-type]


class ResetAnswers(Addon):
    """Placed before the session guard, whose answer hook would otherwise meet a reset's
    PMS session cookies (it strips them without a session, but cannot log them out)."""

    def __init__(self, forms: PasswordForms) -> None:
        self.forms = forms

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        await self.forms.reset_answer(ex, answer)
        return None
