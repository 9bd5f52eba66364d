"""Login interception: the PMS checks the password, the gateway adds the second factor.

The credentials go to the PMS unchanged. Its answer is classified by the policy's success
rule; a failure passes through (and counts toward lockouts), a success is withheld: its
session cookies go into a pending login's vault and the browser is sent to the second
factor step. Only after that does the browser get a gateway session and the PMS's redirect.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import structlog
from aiohttp import web

from gateway.auth.device_ids import DeviceIds
from gateway.auth.events import LoginEvents
from gateway.auth.pending import PendingLogin, PendingLogins
from gateway.auth.remember import RememberedDevices
from gateway.pages.render import see_other, staff_time, wants_json
from gateway.policy.schema import LoginRule, LoginSuccessRule, Policy
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.page_injection import read_decoded
from gateway.proxy.server import PolicyGetter
from gateway.readers.credentials import AmbiguousCredentials, read_login, refuse_stray_credentials
from gateway.readers.redirects import is_local_location, unsafe_targets
from gateway.risk.lockout import Lockouts
from gateway.sessions.cookies import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_MAX_AGE,
    PENDING_COOKIE,
    CookiePolicy,
    cookie_value,
    set_cookie,
    set_cookie_name,
)

log = structlog.get_logger("gateway.auth")

CHALLENGE_PATH = "/_gateway/2fa"


@dataclass
class LoginContext:
    user: str
    group: str | None


class LoginInterceptor(Addon):
    def __init__(
        self,
        policy: PolicyGetter,
        users,
        pending: PendingLogins,
        lockouts: Lockouts,
        events: LoginEvents,
        remembered: RememberedDevices,
        completer,
        clock=time.time,
        support=None,  # SupportAccess: vendor support accounts sign in with an access code
        identity=None,  # IdentityCheck: asks the PMS whom it signed in (login.identity)
        *,
        devices: DeviceIds,
    ) -> None:
        self.support = support
        self.identity = identity
        self.devices = devices  # gw_device values are adopted only when the gateway signed them
        self.policy = policy
        self.users = users
        self.pending = pending
        self.lockouts = lockouts
        self.events = events
        self.remembered = remembered
        self.completer = completer  # finishes a login whose second factor is settled
        self.clock = clock

    # -- the request ---------------------------------------------------------------------

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.policy()
        rule = policy.login
        if not rule.is_login_request(ex.path.path, ex.request.method):
            if rule.password_forms and rule.password_form_for(ex.path.path, ex.request.method) is not None:
                return None  # read under its own form's rules (gateway.auth.password_forms)
            return await self._refuse_stray_password(ex, policy)
        try:
            credentials, body = await read_login(ex, rule)
            if bad := unsafe_targets(ex.query, body if rule.format == "form" else None, rule.next_parameters):
                raise AmbiguousCredentials(f"redirect target {bad[0]!r} leaves this site")
            user = self.users.normalise(credentials.username)
        except AmbiguousCredentials as exc:
            ex.deny("refused", f"login request refused: {exc}")
            return self._error(ex, policy, exc.status, str(exc))
        except ValueError as exc:
            ex.deny("refused", f"login request refused: {exc}")
            return self._error(ex, policy, 400, str(exc))
        ex.user = user
        group = self.users.group_of(user)
        if group is None and policy.login.usernames.unknown == "refuse":
            await self.lockouts.record_failure(None, ex.client_ip)
            await self.events.attempt(ex, user, "refused", None, "unknown user")
            ex.deny("refused", "username unknown to the policy")
            return self._refusal(ex, policy, 403, "refused_unknown_user")
        if not policy.network_allows(group, ex.client_ip):
            # Checked before the password goes anywhere: the group may not log in from here.
            await self.events.attempt(ex, user, "refused", None, "network not allowed for the group")
            ex.deny("refused", "client network not allowed for group")
            return self._refusal(ex, policy, 403, "refused_network")
        lock = await self.lockouts.current(user, ex.client_ip)
        if lock is not None:
            what = "slowed down" if lock.delay else "locked"
            await self.events.attempt(ex, user, "locked_out", None, f"{lock.scope} {what}")
            ex.deny("locked_out", f"{lock.scope} {what}")
            response = self._refusal(ex, policy, 429, "refused_locked", until=self._until(lock, policy))
            response.headers["Retry-After"] = lock.retry_after
            return response
        record = await self.users.get(user)
        if record is not None and not record.active:
            await self.events.attempt(ex, user, "refused", None, "deactivated")
            ex.deny("refused", "user deactivated")
            return self._refusal(ex, policy, 403, "refused_deactivated")
        ex.notes["login"] = LoginContext(user, group)
        return None

    async def _refuse_stray_password(self, ex: Exchange, policy: Policy) -> web.StreamResponse | None:
        """A password anywhere else could swap the identity behind a vault without 2FA.

        What is read and what is refused unread is the credential reader's rule
        (`gateway.readers.credentials.refuse_stray_credentials`): a body that might carry
        the password field and cannot be parsed with certainty is refused, never forwarded.
        """
        try:
            await refuse_stray_credentials(ex, policy.login.password_field, policy.login.charset)
        except AmbiguousCredentials as exc:
            ex.deny("refused", f"password field outside the login path: {exc}")
            return self._error(ex, policy, exc.status, str(exc))
        return None

    def _error(self, ex: Exchange, policy: Policy, status: int, detail: str) -> web.StreamResponse:
        """A request the gateway cannot read safely: a generic page with a technical detail."""
        return error_response(ex.request, status, ex.request_id, policy.property, detail=detail)

    def _refusal(self, ex: Exchange, policy: Policy, status: int, key: str, **values: str) -> web.StreamResponse:
        """A refusal a person must understand: its own title and sentence (messages.json
        `key`, `key_text`) in the browser's language, no English detail."""
        return error_response(ex.request, status, ex.request_id, policy.property, key=key, values=values)

    def _until(self, lock, policy: Policy) -> str:
        """When `lock` ends, as the refusal page says it: in the property's time zone."""
        now = self.clock()
        return staff_time(now + int(lock.retry_after), policy.property_timezone, now=now)

    # -- the PMS's answer ----------------------------------------------------------------

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        context: LoginContext | None = ex.notes.get("login")
        if context is None:
            return None
        policy = self.policy()
        if not await login_succeeded(answer, policy.login, ex.public_origin):
            lock = await self.lockouts.record_failure(context.user, ex.client_ip)
            await self.events.attempt(ex, context.user, "failure", None, "password refused by the PMS")
            if lock is not None:
                await self.events.lockout(ex, context.user, lock.scope)
            ex.deny("login_failed", "password refused by the PMS")
            location = answer.headers.get("Location")
            if location is not None and not is_local_location(location, ex.public_origin):
                answer.headers["Location"] = policy.login.page_url()  # never bounce a login off-site
            return None
        updates, passed = CookiePolicy(policy.login).take_vaulted(answer.headers.getall("Set-Cookie", []))
        vault = {name: value for name, value in updates.items() if value is not None}
        device_id = self.devices.adopt(cookie_value(ex.request.headers.get("Cookie"), DEVICE_COOKIE))
        pending = PendingLogin(
            user=context.user,
            group=context.group,
            ip=ex.client_ip,
            device_id=device_id,
            user_agent=ex.request.headers.get("User-Agent", ""),
            created=self.clock(),
            vault=vault,
            status=answer.status,
            location=answer.headers.get("Location"),
            set_cookies=passed,
            json=policy.login.format == "json",
            stage="verify",
        )
        if self.identity is not None and self.identity.rule() is not None:
            # The PMS may have signed in someone else than the form named (it read the
            # request differently): its own page says whom, before any second factor.
            reading = await self.identity.read(vault, ex)
            if not reading.is_user(context.user):
                await self.completer.abandon(pending)
                await self.events.attempt(ex, context.user, "refused", None, f"identity mismatch: {reading.describe()}")
                ex.deny("refused", f"identity mismatch: {reading.describe()}, not {context.user!r}")
                await self.identity.alert(context.user, reading, ex.client_ip, "login")
                return self._refusal(ex, policy, 403, "refused_identity")
        record = await self.users.ensure(context.user)
        pending.has_totp = record.has_totp or not record.has_security_key
        if self.support is not None and self.support.is_support_account(context.user):
            return await self._support_stage(ex, policy, context, pending)
        if await self.remembered.valid(ex.request, context.user, device_id, policy.sessions_for(context.group)):
            pending.login_type = "remembered_device"
            ex.deny("allowed", "remembered device")
            return await self.completer.complete(ex.request, pending, ex.client_ip)
        stage = await self._first_stage(context, ex.client_ip, policy)
        if stage is None:
            await self.completer.abandon(pending)
            await self.events.attempt(ex, context.user, "refused", None, "enrollment not allowed from this network")
            ex.deny("refused", "no second factor and enrollment not allowed here")
            return self._refusal(ex, policy, 403, "refused_enrollment_network")
        pending.stage = stage
        token = await self.pending.create(pending)
        ex.deny("challenged", "second factor required")
        response = self._challenge(ex, policy, token, device_id)
        # A remember cookie the group's rules ended is deleted here, not left to revive.
        self.remembered.withdraw_ended(ex.request, response.headers, context.user, policy.sessions_for(context.group),
                                       secure=ex.scheme == "https")
        return response

    async def _support_stage(
        self, ex: Exchange, policy: Policy, context: LoginContext, pending: PendingLogin
    ) -> web.StreamResponse:
        """A vendor support account: never a second factor or remembered device, only an
        operator's access code; without a valid grant its PMS session ends at once."""
        pending.login_type = "support_access"
        if not await self.support.has_valid_grant(context.user):
            await self.completer.abandon(pending)
            await self.events.attempt(ex, context.user, "refused", "support_access", "no valid support access code")
            ex.deny("refused", "support account without a valid access grant")
            from gateway.auth.challenge import _message

            response = _message(ex.request, policy, 403, "support_no_grant", link=policy.login.page_url())
            response.headers["X-Request-Id"] = ex.request_id
            return response
        pending.stage = "support"
        token = await self.pending.create(pending)
        ex.deny("challenged", "support access code required")
        return self._challenge(ex, policy, token, pending.device_id)

    async def _first_stage(self, context: LoginContext, ip: str, policy: Policy) -> str | None:
        if await self.users.has_second_factor(context.user):
            return "verify"
        mode = policy.enrollment_for(context.group)
        if mode == "invite":
            return "invite"
        if mode == "open":
            return "enroll"
        address = ipaddress.ip_address(ip)
        if any(address in net for net in policy.expand_networks(policy.second_factor.enrollment_networks)):
            return "enroll"
        return None

    def _challenge(self, ex: Exchange, policy: Policy, token: str, device_id: str) -> web.StreamResponse:
        secure = ex.scheme == "https"
        if policy.login.format == "json" or wants_json(ex.request):
            response: web.StreamResponse = web.json_response(
                {"status": "second_factor_required", "next": CHALLENGE_PATH}, status=200
            )
        else:
            response = see_other(CHALLENGE_PATH)
        ttl = int(policy.second_factor.pending_login_timeout)
        response.headers.add(
            "Set-Cookie",
            set_cookie(PENDING_COOKIE, token, secure=secure, max_age=ttl, path="/_gateway/", same_site="Strict"),
        )
        response.headers.add(
            "Set-Cookie", set_cookie(DEVICE_COOKIE, device_id, secure=secure, max_age=DEVICE_COOKIE_MAX_AGE)
        )
        response.headers["X-Request-Id"] = ex.request_id
        response.headers["Cache-Control"] = "no-store"
        return response


async def login_succeeded(answer: UpstreamAnswer, rule: LoginRule, public_origin: str) -> bool:
    """Apply the policy's success rule to the PMS's answer to a login request."""
    return await password_accepted(answer, rule.success, public_origin, rule.path)


async def password_accepted(answer: UpstreamAnswer, success: LoginSuccessRule, public_origin: str, path: str) -> bool:
    """Whether the PMS's answer to a password posted to `path` says it accepted it, by
    `success` (the login's rule, or a password form's own)."""
    if answer.status not in success.status:
        return False
    location = answer.headers.get("Location")
    if location is not None:
        if not is_local_location(location, public_origin):
            return False  # a redirect off-site is never a successful login to this PMS
        target = urlsplit(urljoin(public_origin + path, location))
        if success.redirect_not_to and re.search(success.redirect_not_to, target.path):
            return False
        if success.redirect_to and not re.search(success.redirect_to, target.path):
            return False
    elif success.redirect_to:
        return False
    if success.cookie_set:
        names = {set_cookie_name(c) for c in answer.headers.getall("Set-Cookie", [])}
        if success.cookie_set not in names:
            return False
    if success.failure_text:
        # Read as the browser would see it: a PMS that gzips its pages must not hide its
        # failure text. An answer that cannot be decoded with certainty is no success.
        body = await read_decoded(answer)
        if body is None:
            return False
        spellings = {success.failure_text.encode(), success.failure_text.encode("cp1252", "ignore")}
        if any(spelling in body for spelling in spellings):
            return False
    return True
