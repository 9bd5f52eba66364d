"""Brute force and credential stuffing: failures counted per user and per IP, then a lock.

Counters are fixed windows in the ephemeral store, so every worker sees the same count;
a lock is a key with the lock duration as its TTL. Wrong passwords and wrong second-factor
codes both count against the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.policy.schema import LockoutRule, Policy
from gateway.store.base import EphemeralStore


@dataclass(frozen=True)
class Lock:
    scope: str  # user | ip
    remaining: float | None


class Lockouts:
    def __init__(self, store: EphemeralStore, policy: Callable[[], Policy]) -> None:
        self.store = store
        self.policy = policy

    async def current(self, user: str | None, ip: str) -> Lock | None:
        for scope, subject in (("user", user), ("ip", ip)):
            if subject is None:
                continue
            key = f"lock:{scope}:{subject}"
            if await self.store.get(key) is not None:
                return Lock(scope, await self.store.ttl(key))
        return None

    async def failures(self, user: str) -> int:
        value = await self.store.get(f"fail:user:{user}")
        return int(value) if value else 0

    async def record_failure(self, user: str | None, ip: str) -> Lock | None:
        """Count one failure; returns the lock it triggered, if any."""
        rules = self.policy().lockout
        triggered = None
        for scope, subject, rule in (("user", user, rules.per_user), ("ip", ip, rules.per_ip)):
            if subject is not None and await self._count(scope, subject, rule):
                triggered = triggered or Lock(scope, rule.lock_for)
        return triggered

    async def _count(self, scope: str, subject: str, rule: LockoutRule) -> bool:
        count = await self.store.incr(f"fail:{scope}:{subject}", ttl=rule.within)
        if count >= rule.failures:
            await self.store.set(f"lock:{scope}:{subject}", b"1", ttl=rule.lock_for)
            await self.store.delete(f"fail:{scope}:{subject}")
            return True
        return False

    async def clear_user(self, user: str) -> None:
        await self.store.delete(f"fail:user:{user}")
