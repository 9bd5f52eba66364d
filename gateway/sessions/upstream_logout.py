"""Ending the PMS session behind a gateway session.

Whenever a gateway session ends (logout, idle or absolute expiry, replaced by another
device, user deactivated, pending login abandoned) no live PMS session may be left
behind: the gateway requests the PMS's logout path with the vaulted cookies, as the
browser would have, with that browser's User-Agent. Each call is one audit record
(decision `upstream_logout`) under the session's user and session hash, with its reason.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

import aiohttp
import structlog

from gateway.audit.entry import AuditEntry
from gateway.audit.writer import RecordQueue
from gateway.config import Config
from gateway.proxy.exchange import Addon
from gateway.proxy.server import PolicyGetter
from gateway.sessions.model import LogoutSubject

log = structlog.get_logger("gateway.sessions")


class UpstreamLogout(Addon):
    def __init__(self, config: Config, policy: PolicyGetter, audit: RecordQueue | None = None) -> None:
        self.audit = audit
        self.base = config.upstream.url
        self.policy = policy
        public = urlsplit(config.public_urls[0])
        self.public_host = public.netloc
        self.upstream_host = urlsplit(config.upstream.url).netloc
        self.client: aiohttp.ClientSession | None = None

    async def startup(self) -> None:
        self.client = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=15),
            auto_decompress=False,
        )

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def __call__(self, vault: dict[str, str], subject: LogoutSubject | None = None) -> None:
        policy = self.policy()
        if not policy.login.logout_paths or self.client is None:
            return
        path = policy.login.logout_paths[0]
        host = self.upstream_host if policy.upstream.host_header == "upstream" else self.public_host
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in vault.items()), "Host": host}
        if subject is not None and subject.user_agent:
            headers["User-Agent"] = subject.user_agent
        entry = AuditEntry(
            request_id="logout-" + secrets.token_hex(8), at=time.time(), decision="upstream_logout",
            user=subject.user if subject else None, session_hash=subject.session_hash if subject else None,
            method="GET", path=path, reason=subject.reason if subject else None,
        )
        started = time.perf_counter()
        try:
            async with self.client.get(self.base + path, headers=headers, allow_redirects=False) as response:
                await response.read()
                entry.status = response.status
                log.info("upstream session ended", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            entry.decision, entry.reason = "upstream_error", f"upstream logout failed: {type(exc).__name__}"
            log.warning("could not end the upstream session", error=type(exc).__name__)
        entry.duration_ms = entry.upstream_ms = (time.perf_counter() - started) * 1000.0
        if self.audit is not None:
            await self.audit.put(entry)
