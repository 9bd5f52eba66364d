"""Binding a session's identity to the PMS's own answer (`login.identity`).

The gateway decides who a session belongs to from the login form it intercepted; the
PMS decides from its session cookie. The two can part: a second login form, a "switch
user" page or a JSON login of the PMS can put another user's session cookie into a
gateway session without that user's second factor. So where the policy says how
(a page and a pattern), the gateway asks the PMS who is signed in, with the vaulted
cookies, after every login and whenever the vaulted cookies of a session change; any
answer but the session's user (none read included) ends it.

The page is fetched with the forwarder's own client class and settings (no cookie jar,
no redirects, no headers of the client library's own, the upstream's TLS settings),
and with the request's forwarding headers, so a PMS that binds its sessions to the
client's address or browser sees the same client.
"""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from gateway.config import Config
from gateway.policy.schema import LoginIdentity
from gateway.proxy.exchange import Addon, Exchange
from gateway.proxy.forward import Forwarder
from gateway.proxy.server import PolicyGetter

log = structlog.get_logger("gateway.sessions")

MAX_PAGE = 2 * 1024 * 1024  # the identity page is read whole, up to this size
FETCH_TIMEOUT = 10.0
# What the identity request carries of the browser's request: who and where the client is.
_CLIENT_HEADERS = (
    "Host", "User-Agent", "Accept-Language", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
    "X-Request-Id",
)


@dataclass(frozen=True, slots=True)
class IdentityReading:
    """Who the PMS says is signed in (normalised), or why nobody could be read."""

    user: str | None
    detail: str  # for the audit trail and the alert: never a cookie or a page body

    def is_user(self, expected: str) -> bool:
        return self.user is not None and self.user == expected

    def describe(self) -> str:
        return f"the PMS shows {self.user!r}" if self.user is not None else f"no user read from the PMS ({self.detail})"


class IdentityCheck(Addon):
    """Reads the signed-in user from the PMS; raises the `identity_mismatch` alert."""

    def __init__(self, config: Config, policy: PolicyGetter, users, alerter=None) -> None:
        self.policy = policy
        self.users = users  # the one username normaliser (UserDirectory.normalise)
        self.alerter = alerter
        self.forwarder = Forwarder(config.upstream, config.limits)
        self._patterns: dict[str, re.Pattern[str]] = {}

    async def startup(self) -> None:
        await self.forwarder.start()

    async def shutdown(self) -> None:
        await self.forwarder.close()

    def rule(self) -> LoginIdentity | None:
        identity = self.policy().login.identity
        return identity if identity.configured else None

    async def read(self, vault: dict[str, str], ex: Exchange) -> IdentityReading:
        """GET the identity page with `vault` as the only cookies and read the user."""
        rule = self.rule()
        assert rule is not None and rule.path is not None and rule.pattern is not None
        headers = CIMultiDict((name, ex.upstream_headers[name]) for name in _CLIENT_HEADERS if name in ex.upstream_headers)
        if vault:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in vault.items())
        session = self.forwarder.session
        if session is None:
            return IdentityReading(None, "upstream client not started")
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                async with session.get(
                    URL(self.forwarder.base.rstrip("/") + rule.path), headers=headers, allow_redirects=False
                ) as response:
                    if response.status not in rule.status:
                        return IdentityReading(None, f"status {response.status} from {rule.path}")
                    body = await response.content.read(MAX_PAGE + 1)
                    charset = response.charset or "utf-8"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return IdentityReading(None, f"{rule.path} unreachable ({type(exc).__name__})")
        if len(body) > MAX_PAGE:
            return IdentityReading(None, f"{rule.path} larger than {MAX_PAGE} bytes")
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:
            return IdentityReading(None, f"unknown charset {charset!r}")
        match = self._pattern(rule.pattern).search(text)
        if match is None or not match.group(1):
            return IdentityReading(None, "pattern not found")
        try:
            return IdentityReading(self.users.normalise(html.unescape(match.group(1))), "read")
        except ValueError as exc:
            return IdentityReading(None, f"unusable user name ({exc})")

    def _pattern(self, pattern: str) -> re.Pattern[str]:
        compiled = self._patterns.get(pattern)
        if compiled is None:
            compiled = self._patterns[pattern] = re.compile(pattern)
        return compiled

    async def alert(self, expected: str, reading: IdentityReading, ip: str, when: str) -> None:
        """Tell the operator (`alerts.on` lists `identity_mismatch` by default)."""
        log.warning("identity mismatch", user=expected, pms_user=reading.user, detail=reading.detail, ip=ip, when=when)
        if self.alerter is None:
            return
        from gateway.notify.events import Alert

        shown = reading.user if reading.user is not None else f"nobody ({reading.detail})"
        lines = (
            f"User: {expected}", f"The PMS shows: {shown}", f"Address: {ip}", f"When: {when}", "",
            "The PMS's own session did not belong to the gateway session's user; the session was ended.",
            "Look for a second login form, a 'switch user' page or a JSON login in the PMS, and at the audit trail.",
        )
        try:
            await self.alerter.submit(Alert(
                "identity_mismatch", f"Identity mismatch: {expected}'s session showed {shown} in the PMS",
                lines, expected, ip, {"pms_user": reading.user, "detail": reading.detail, "when": when},
            ))
        except Exception:
            log.exception("identity mismatch alert failed", user=expected)
