"""The session guard: every request needs a live device session, except public paths.

For a request with a session it checks idle and absolute expiry, the group's networks and
access rules, injects the PMS's cookies from the vault and records activity. Answers of
the PMS are filtered: vaulted cookies never reach the browser, and their new values go
into the vault of the session the answer belongs to, and no other.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.access.api_clients import is_api_request
from gateway.access.origin_check import navigated_from_here
from gateway.audit.capture import AREA_NOTE
from gateway.auth.challenge import LOGOUT as LOGOUT_PAGE
from gateway.pages.injected import notice
from gateway.pages.render import see_other, choose_language, render_page, translator, wants_json
from gateway.policy.schema import Policy
from gateway.policy.types import method_listed
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.page_injection import inject_html
from gateway.proxy.server import PolicyGetter
from gateway.proxy.websocket import is_websocket_upgrade
from gateway.readers.redirects import is_local_location, is_local_target
from gateway.sessions.cookies import (
    DEVICE_COOKIE,
    GATEWAY_COOKIES,
    NOTICE_COOKIE,
    SESSION_COOKIE,
    CookiePolicy,
    apply_vault_updates,
    clear_cookie,
    cookie_value,
    parse_cookie_header,
    set_cookie,
    set_cookie_name,
)
from gateway.sessions.identity import IdentityCheck, IdentityReading
from gateway.sessions.ending import keep_out_of_cache, session_ended
from gateway.sessions.manager import SessionManager
from gateway.sessions.model import DeviceSession, EndedSession, LogoutSubject, token_hash
from gateway.sessions.revocation import SESSION_ENDED_CHANNEL, USER_REVOKED_CHANNEL

log = structlog.get_logger("gateway.sessions")
NOTICE_REASONS = frozenset({"idle", "expired", "logout", "deactivated", "replaced", "revoked", "required", "relogin"})
SWEEP_INTERVAL = 30.0


class CompiledAccessRules:
    """Per-group access rules, compiled once per policy version."""

    def __init__(self, policy: Policy) -> None:
        self.access = {
            name: [
                (re.compile(rule.allow or rule.deny or ""), rule.allow is not None, rule.methods)
                for rule in g.access.rules
            ]
            for name, g in policy.groups.items()
        }

    def matching_rule(self, group: str | None, method: str, path: str) -> tuple[int, bool] | None:
        """(index in the group's `access.rules`, allow?) of the first rule matching the
        request, or None. The guard and `pms-gateway policy explain` both decide by it."""
        for index, (pattern, allow, methods) in enumerate(self.access.get(group or "", [])):
            if not method_listed(method, methods):
                continue
            if pattern.search(path):
                return index, allow
        return None

    def allowed(self, group: str | None, method: str, path: str) -> bool:
        """First matching rule wins; no rule matching = allowed."""
        match = self.matching_rule(group, method, path)
        return match is None or match[1]


class SessionGuard(Addon):
    def __init__(self, policy: PolicyGetter, sessions: SessionManager, identity: IdentityCheck | None = None) -> None:
        self.policy = policy
        self.sessions = sessions
        self.identity = identity  # asks the PMS who its new cookies belong to (login.identity)
        self._compiled: tuple[int, CompiledAccessRules, CookiePolicy] | None = None
        self._websockets: dict[str, set[web.WebSocketResponse]] = {}
        self._tasks: list[asyncio.Task] = []
        self._subscriptions: list = []

    def _rules(self) -> tuple[CompiledAccessRules, CookiePolicy]:
        policy = self.policy()
        if self._compiled is None or self._compiled[0] != id(policy):
            self._compiled = (id(policy), CompiledAccessRules(policy), CookiePolicy(policy.login))
        return self._compiled[1], self._compiled[2]

    # -- lifecycle: revocations from elsewhere, and expiry without requests -------------------

    async def startup(self) -> None:
        store = self.sessions.store
        await self.sessions.listen()
        self._subscriptions.append(await store.subscribe(SESSION_ENDED_CHANNEL, self._on_session_ended))
        self._subscriptions.append(await store.subscribe(USER_REVOKED_CHANNEL, self._on_user_revoked))
        self._tasks.append(asyncio.create_task(self._sweep_forever()))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for subscription in self._subscriptions:
            await subscription.close()
        await self.sessions.stop_listening()
        await self.sessions.drain()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.sessions.sweep()
            except Exception:
                log.exception("session sweep failed")

    async def _on_session_ended(self, message: bytes) -> None:
        for ws in self._websockets.pop(message.decode(), set()):
            await ws.close(code=4401, message=b"session ended")

    async def _on_user_revoked(self, message: bytes) -> None:
        await self.sessions.finish_revoked()

    # -- requests ------------------------------------------------------------------------

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        if is_api_request(ex):
            return None  # an API client's, judged by its token (gateway.access.api_clients)
        policy = self.policy()
        area = policy.areas.public_area_of(ex.path.path)
        if area is not None:
            _enter_public_area(ex, area)
            return None
        access, cookies = self._rules()
        headers = ex.request.headers
        session_id = cookie_value(headers.get("Cookie"), SESSION_COOKIE)
        session = await self.sessions.get(session_id) if session_id else None
        ended: EndedSession | None = None
        if session is not None and (reason := self.sessions.expiry_reason(session)) is not None:
            await self.sessions.end(session, reason)
            session = None
        if session is not None and (theft := self._stolen(ex, session)) is not None:
            # The session cookie without its browser (or from elsewhere): end it, the
            # rightful user signs in again, and the attempt is on record.
            log.warning("session used from another device or address", user=session.user,
                        session_hash=session.id_hash[:16], ip=ex.client_ip, reason=theft)
            await self.sessions.end(session, "revoked")
            ex.deny("denied", f"session cookie replayed ({theft})")
            session = None
        if session is not None and policy.login.is_login_request(ex.path.path, ex.request.method):
            # A login is a new identity: it goes up without this session's PMS cookies. A PMS
            # that signs a user in within the session it is sent (no new session id, so no
            # vault change for the identity check to see) would give this session that user.
            session = None
        if session is None:
            self._set_upstream_cookies(ex, cookies, {})
            if policy.is_public_path(ex.path.path):
                return None
            if session_id:
                ended = await self.sessions.ended(session_id)
                if ended is not None:  # audited under the session it was
                    ex.user, ex.session_hash = ended.user, token_hash(session_id)
            return self._session_required(ex, policy, ended)

        ex.user, ex.session_hash, ex.device_id = session.user, session.id_hash, session.device_id
        ex.notes["session"] = session
        if not policy.network_allows(session.group, ex.client_ip):
            ex.deny("denied", "client network not allowed for group")
            return error_response(ex.request, 403, ex.request_id, policy.property, key="refused_network")
        if not access.allowed(session.group, ex.request.method, ex.path.path):
            ex.deny("denied", "access rule")
            return error_response(ex.request, 403, ex.request_id, policy.property, detail="access rule")
        self._set_upstream_cookies(ex, cookies, session.vault)
        await self.sessions.touch(session, ex.path.path)
        if ex.path.path in policy.login.logout_paths:
            if not navigated_from_here(ex.request, ex.public_origin):
                # Another site's link or form: the gateway's logout page asks (a POST with a token).
                ex.deny("denied", "logout not started from this site: confirmation asked")
                return see_other(LOGOUT_PAGE)
            ex.notes["logout"] = True
        if is_websocket_upgrade(ex.request):
            ex.notes["on_websocket"] = self._register_websocket
        return None

    async def done(self, ex: Exchange) -> None:
        """A request refused before this guard ran (CSRF, a stray password, a rate limit
        per address, the audit's own refusal) is still audited under the session it
        carried, if that session is live or ended."""
        if ex.user is not None or ex.decision in ("allowed", "gateway") or is_api_request(ex):
            return
        session_id = cookie_value(ex.request.headers.get("Cookie"), SESSION_COOKIE)
        if not session_id:
            return
        try:
            session = await self.sessions.get(session_id)
            if session is not None:
                ex.user, ex.session_hash, ex.device_id = session.user, session.id_hash, session.device_id
            elif (ended := await self.sessions.ended(session_id)) is not None and ended.user is not None:
                ex.user, ex.session_hash = ended.user, token_hash(session_id)
        except Exception:  # the store is down: the record goes out without a user, not lost
            log.warning("session of a refused request not readable", request_id=ex.request_id)

    def _stolen(self, ex: Exchange, session) -> str | None:
        """Why this request cannot be the session's own browser, if it cannot."""
        if cookie_value(ex.request.headers.get("Cookie"), DEVICE_COOKIE) != session.device_id:
            return "device cookie missing or different"
        if self.policy().sessions_for(session.group).bind_to_ip and ex.client_ip != session.ip:
            return "different client address"
        return None

    def _register_websocket(self, id_hash: str, ws: web.WebSocketResponse) -> None:
        self._websockets.setdefault(id_hash, set()).add(ws)

    @staticmethod
    def _set_upstream_cookies(ex: Exchange, cookies: CookiePolicy, vault: dict[str, str]) -> None:
        header = cookies.upstream_cookie_header(ex.request.headers.get("Cookie"), vault)
        if header is None:
            ex.upstream_headers.popall("Cookie", None)
        else:
            ex.upstream_headers["Cookie"] = header

    def _session_required(self, ex: Exchange, policy: Policy, ended: EndedSession | None) -> web.StreamResponse:
        reason = ended.reason if ended else "required"
        ex.deny("challenged" if reason == "required" else "denied", f"no session ({reason})")
        secure = ex.scheme == "https"
        request = ex.request
        if is_websocket_upgrade(request) or wants_json(request) or policy.areas.is_api_path(ex.path.path):
            body = {"error": "session_required", "reason": reason, "login": policy.login.page_url()}
            if ended and ended.reason == "replaced":
                body.update(at=_local_time(ended.at, policy.property_timezone), from_ip=ended.by_ip)
            response = web.json_response(body, status=401, headers={"X-Request-Id": ex.request_id})
        elif ended is not None and ended.reason == "replaced":
            t = translator(choose_language(request.headers.get("Accept-Language")))
            response = render_page(
                request,
                "signed_out.html",
                status=401,
                property_name=policy.property,
                message=t("signed_out_replaced", at=_local_time(ended.at, policy.property_timezone),
                          ip=ended.by_ip or "?"),
                login_url=policy.login.page_url(),
                request_id=ex.request_id,
            )
        elif request.method in ("GET", "HEAD"):
            target = ex.path.encoded + ("?" + ex.query if ex.query else "")
            back = f"next={quote(target, safe='')}" if is_local_target(target) else ""
            response = see_other(policy.login.page_url(back))
            response.headers["X-Request-Id"] = ex.request_id
        else:
            response = error_response(request, 401, ex.request_id, policy.property, detail="session required")
        notice = _next_notice(reason, cookie_value(request.headers.get("Cookie"), NOTICE_COOKIE))
        response.headers.add("Set-Cookie", set_cookie(NOTICE_COOKIE, notice, secure=secure, max_age=120))
        if ended is not None:
            session_ended(response.headers, secure=secure)
        return response

    # -- answers -------------------------------------------------------------------------

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        set_cookies = answer.headers.getall("Set-Cookie", [])
        if AREA_NOTE in ex.notes and "session" not in ex.notes:
            # A guest area's cookies are the guest's, whatever their names: passed on, never
            # vaulted (only the gateway's own names are never the PMS's to set).
            if set_cookies:
                _replace_all(answer.headers, "Set-Cookie", [c for c in set_cookies if _not_gateway_cookie(c)])
            return None
        _, cookies = self._rules()
        session = ex.notes.get("session")
        if set_cookies:
            updates, passed = cookies.take_vaulted(set_cookies)
            _replace_all(answer.headers, "Set-Cookie", passed)
            if session is not None and updates and not ex.notes.get("logout"):
                refused = await self._update_vault(ex, session, updates)
                if refused is not None:
                    return refused
        if session is not None and ex.notes.get("logout"):
            # The PMS just ended its session on this very request: its login page, next, says so.
            await self.sessions.end(session, "logout", upstream_logout=False)
            session_ended(answer.headers, secure=ex.scheme == "https")
            answer.headers.add("Set-Cookie", set_cookie(NOTICE_COOKIE, "logout", secure=ex.scheme == "https", max_age=120))
        location = answer.headers.get("Location")
        if ex.notes.get("logout") and location is not None and not is_local_location(location, ex.public_origin):
            answer.headers["Location"] = self.policy().login.page_url()  # a logout never bounces off-site
        if session is not None and not ex.notes.get("logout"):
            keep_out_of_cache(answer.headers, self.policy().sessions_for(session.group), ex.path.path)
        notice = cookie_value(ex.request.headers.get("Cookie"), NOTICE_COOKIE)
        if (notice and session is None and ex.path.path == self.policy().login.page_path and ex.request.method == "GET"
                and _top_level_page(ex.request)):
            await self._inject_notice(ex, answer, notice)
        return None

    async def _update_vault(
        self, ex: Exchange, session: DeviceSession, updates: dict[str, str | None]
    ) -> web.StreamResponse | None:
        """New PMS cookies for a live session: they may belong to another user (a second
        login form, "switch user", a JSON login). With `login.identity` the PMS is asked
        whose they are; without it only deletions are taken, a new value is dropped."""
        checking = self.identity is not None and self.identity.rule() is not None
        if not checking:
            if dropped := sorted(name for name, value in updates.items() if value is not None):
                log.warning("vaulted cookie set outside the login dropped", user=session.user,
                            session_hash=session.id_hash[:16], path=ex.path.path, cookies=dropped)
                updates = {name: value for name, value in updates.items() if value is None}
        before = dict(session.vault)
        if not apply_vault_updates(session.vault, updates):
            return None
        if checking:
            assert self.identity is not None
            reading = await self.identity.read(session.vault, ex)
            if not reading.is_user(session.user):
                return await self._identity_mismatch(ex, session, before, reading)
        if not await self.sessions.save(session):
            # Ended meanwhile (a logout in another tab, a revocation): its PMS session,
            # now under the cookies just set, is ended too rather than left signed in.
            self.sessions.end_upstream(session.vault, LogoutSubject.of(session, "ended"))
        return None

    async def _identity_mismatch(
        self, ex: Exchange, session: DeviceSession, before: dict[str, str], reading: IdentityReading
    ) -> web.StreamResponse:
        """End the session and both PMS sessions behind it (the new and the original one)."""
        assert self.identity is not None
        await self.sessions.end(session, "revoked")  # logs out the PMS session of the new cookies
        if before != session.vault:
            self.sessions.end_upstream(before, LogoutSubject.of(session, "identity mismatch"))
        ex.deny("denied", f"identity mismatch: {reading.describe()}, not {session.user!r}; session ended")
        await self.identity.alert(session.user, reading, ex.client_ip, f"{ex.request.method} {ex.path.path}")
        response = error_response(
            ex.request, 403, ex.request_id, self.policy().property,
            detail="the PMS signed in another user: this session was ended",
        )
        response.headers.add("Set-Cookie", clear_cookie(SESSION_COOKIE, secure=ex.scheme == "https"))
        return response

    async def _inject_notice(self, ex: Exchange, answer: UpstreamAnswer, reason: str) -> None:
        """Tell the user, on the PMS's own login page, why they have to sign in again."""
        answer.headers.add("Set-Cookie", clear_cookie(NOTICE_COOKIE, secure=ex.scheme == "https"))
        if reason not in NOTICE_REASONS:
            return
        t = translator(choose_language(ex.request.headers.get("Accept-Language")))
        # Classes and a same-origin stylesheet, not style=: a PMS's CSP blocks inline styles.
        await inject_html(ex.request.method, answer, notice(t("notice_" + reason)))


def _enter_public_area(ex: Exchange, label: str) -> None:
    """A guest area (`public_areas:`): no session is looked up (a staff member's idle timer
    is not refreshed by it), no vaulted cookie is sent; the browser's own cookies go up as
    they are, even under a vaulted name (the guest shop's own session), minus the gateway's."""
    ex.notes[AREA_NOTE] = label
    pairs = [(k, v) for k, v in parse_cookie_header(ex.request.headers.get("Cookie")) if k not in GATEWAY_COOKIES]
    if pairs:
        ex.upstream_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in pairs)
    else:
        ex.upstream_headers.popall("Cookie", None)


def _not_gateway_cookie(header: str) -> bool:
    name = set_cookie_name(header)
    return bool(name) and name not in GATEWAY_COOKIES


def _replace_all(headers: CIMultiDict[str], name: str, values: list[str]) -> None:
    headers.popall(name, None)
    for value in values:
        headers.add(name, value)


def _next_notice(reason: str, pending: str | None) -> str:
    """The notice the next login page is to show.

    Why a session ended (idle, expired, logout, ...) is said once, by whichever answer
    first meets the ended session: often a script's poll, whose 401 nobody reads. The
    cookie keeps that reason for the next page; the requests after it, which carry no
    session any more and would each say the generic "required", keep it instead (and its
    lifetime restarts, so a page polling on still has it when the user comes back)."""
    if reason == "required" and pending in NOTICE_REASONS:
        return pending
    return reason


def _top_level_page(request: web.BaseRequest) -> bool:
    """A page the user sees: a navigation, not a script's fetch (which would spend the
    notice where nobody reads it). Browsers without Fetch Metadata count as navigations."""
    return request.headers.get("Sec-Fetch-Dest", "document") in ("document", "iframe", "frame")


def _local_time(timestamp: float, zone: str) -> str:
    """A time for staff: in the property's time zone (policy `property_timezone`), with its abbreviation."""
    return datetime.fromtimestamp(timestamp, tz=ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
