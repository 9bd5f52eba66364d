"""Where login outcomes go: login history (with known IPs and alerts) and the log.

The login code reports every attempt here and stays ignorant of how history is stored or
who gets alerted; without a history backend (unit tests) attempts are only logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import structlog

from gateway.proxy.exchange import Exchange

if TYPE_CHECKING:
    from gateway.auth.pending import PendingLogin

log = structlog.get_logger("gateway.auth")


class LoginHistoryBackend(Protocol):
    async def record(self, attempt: Any) -> Any: ...


class LoginEvents:
    def __init__(self, history: LoginHistoryBackend | None = None, alerter: Any = None) -> None:
        self.history = history
        self.alerter = alerter

    async def attempt(
        self,
        ex_or_ip: Exchange | str,
        user: str,
        outcome: str,
        login_type: str | None,
        reason: str | None = None,
        *,
        device_id: str | None = None,
        user_agent: str | None = None,
    ) -> Any:
        if isinstance(ex_or_ip, Exchange):
            ip = ex_or_ip.client_ip
            user_agent = user_agent or ex_or_ip.request.headers.get("User-Agent")
            device_id = device_id or ex_or_ip.device_id
        else:
            ip = ex_or_ip
        log.info("login attempt", user=user, ip=ip, outcome=outcome, login_type=login_type, reason=reason)
        if self.history is None:
            return None
        from gateway.audit.logins import LoginAttempt

        try:
            return await self.history.record(
                LoginAttempt(
                    username=user,
                    ip=ip,
                    outcome=outcome,
                    login_type=login_type,
                    device_id=device_id,
                    reason=reason,
                    user_agent=user_agent,
                )
            )
        except Exception:
            log.exception("login history not recorded", user=user)
            return None

    async def pending_attempt(
        self, pending: PendingLogin, ip: str, outcome: str, login_type: str | None, reason: str | None = None
    ) -> Any:
        """An attempt of a login between password and second factor, from its device and browser."""
        return await self.attempt(
            ip, pending.user, outcome, login_type, reason, device_id=pending.device_id, user_agent=pending.user_agent
        )

    async def lockout(self, ex: Exchange, user: str, scope: str) -> None:
        log.warning("lockout", user=user, ip=ex.client_ip, scope=scope)
        if self.alerter is not None:
            try:
                await self.alerter.lockout(user=user, ip=ex.client_ip, scope=scope)
            except Exception:
                log.exception("lockout alert failed", user=user)
