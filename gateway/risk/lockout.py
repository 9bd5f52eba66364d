"""Brute force and credential stuffing: failures counted per user and per network, then a
lock, or inside the hotel's own networks a growing wait.

Counters are fixed windows in the ephemeral store, so every worker sees the same count;
a lock is a key with the lock duration as its TTL. Wrong passwords and wrong second-factor
codes both count against the user. Addresses are counted by `network_key` (an IPv6 /64,
the IPv4 host of a mapped address): one client cannot dodge the per-IP rule by changing
the low bits of its address.

A lock is also a lever against the hotel: anyone on the internet can lock `manager`, and
a lock on the hotel's one public address would shut out the whole front desk. So with
`lockout.inside_known_networks: delay` (the default) a client inside the known networks
(`captcha.known_networks`) is never locked: once a rule's failure limit is reached, each
further failure makes it wait 1 s, 2 s, 4 s, ... up to `lockout.delay_max` before the next
attempt is taken (429 with Retry-After), and locks do not apply to it. Failures from inside
still lock the account (and address) for clients outside, as any failures do.
The wait is answered, not slept: a held connection would cost the gateway a socket per
guess, and parallel requests would all sleep and then all pass together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.policy.schema import LockoutRule, Policy
from gateway.risk.networks import KnownNetworks, client_key
from gateway.store.base import EphemeralStore

MAX_DOUBLINGS = 40  # 2**40 s is far beyond any delay_max; keeps the number small


@dataclass(frozen=True)
class Lock:
    scope: str  # user | ip
    remaining: float | None  # seconds
    delay: bool = False  # a growing wait inside the known networks, not a lock

    @property
    def retry_after(self) -> str:
        """For the Retry-After header: whole seconds (a millisecond over rounds down), at least 1."""
        return str(max(1, math.ceil((self.remaining or 1) - 0.001)))


class Lockouts:
    def __init__(
        self, store: EphemeralStore, policy: Callable[[], Policy], clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.known = KnownNetworks()

    def _subjects(self, policy: Policy, user: str | None, ip: str) -> list[tuple[str, str, LockoutRule]]:
        subjects = [("ip", client_key(ip, policy), policy.lockout.per_ip)]
        if user is not None:
            subjects.insert(0, ("user", user, policy.lockout.per_user))
        return subjects

    def slows_down(self, ip: str, policy: Policy) -> bool:
        """True when failures from `ip` earn a wait rather than a lock."""
        return policy.lockout.inside_known_networks == "delay" and self.known.contains(ip, policy)

    async def current(self, user: str | None, ip: str) -> Lock | None:
        """The lock (or wait) that refuses an attempt by `user` from `ip` now, if any."""
        policy = self.policy()
        inside = self.slows_down(ip, policy)
        for scope, subject, _ in self._subjects(policy, user, ip):
            if inside:
                value = await self.store.get(f"wait:{scope}:{subject}")
                left = int(value) / 1000 - self.clock() if value else 0
                if left > 0:
                    return Lock(scope, left, delay=True)
                continue
            key = f"lock:{scope}:{subject}"
            if await self.store.get(key) is not None:
                return Lock(scope, await self.store.ttl(key))
        return None

    async def failures(self, user: str) -> int:
        value = await self.store.get(f"fail:user:{user}")
        return int(value) if value else 0

    async def most_failures(self, user: str | None, ip: str) -> int:
        """The captcha trigger's count. Outside the known networks: the larger of the user's
        and the address's counts (password spraying from one address is caught). Inside them
        the address is the whole hotel behind one NAT, so the user's count and the
        (user, address) pair's: one colleague's typos never captcha the others."""
        policy = self.policy()
        if self.known.contains(ip, policy):
            if user is None:
                return 0
            keys = [f"fail:user:{user}", f"fail:pair:{_pair(user, client_key(ip, policy))}"]
        else:
            keys = [f"fail:{scope}:{subject}" for scope, subject, _ in self._subjects(policy, user, ip)]
        return max(int(value) if value else 0 for value in [await self.store.get(key) for key in keys])

    async def record_failure(self, user: str | None, ip: str) -> Lock | None:
        """Count one failure; returns the lock (or first wait) it triggered, if any."""
        policy = self.policy()
        inside = self.slows_down(ip, policy)
        triggered = None
        if user is not None:  # the captcha trigger inside the known networks (most_failures)
            await self.store.incr(f"fail:pair:{_pair(user, client_key(ip, policy))}", ttl=policy.lockout.per_user.within)
        for scope, subject, rule in self._subjects(policy, user, ip):
            count = await self.store.incr(f"fail:{scope}:{subject}", ttl=rule.within)
            if count < rule.failures:
                continue
            # The lock guards the account everywhere outside the known networks, whoever failed.
            await self.store.set(f"lock:{scope}:{subject}", b"1", ttl=rule.lock_for)
            if inside:  # the count goes on growing: it sets the wait
                lock = await self._wait(scope, subject, count - rule.failures, policy)
            else:
                await self.store.delete(f"fail:{scope}:{subject}")
                lock = Lock(scope, rule.lock_for)
            if lock is not None:
                triggered = triggered or lock
        return triggered

    async def _wait(self, scope: str, subject: str, past_limit: int, policy: Policy) -> Lock | None:
        """Make the next attempt wait 2**past_limit seconds (capped); a Lock the first time."""
        delay = min(2.0 ** min(past_limit, MAX_DOUBLINGS), policy.lockout.delay_max)
        until_ms = math.floor((self.clock() + delay) * 1000)  # waiting `delay` is always enough
        # raise_to: of parallel failures, the latest deadline wins on every worker.
        await self.store.raise_to(f"wait:{scope}:{subject}", until_ms, ttl=max(delay, 1.0) + policy.lockout.delay_max)
        return Lock(scope, delay, delay=True) if past_limit == 0 else None

    async def clear_user(self, user: str, ip: str | None = None) -> None:
        """After a successful login: the user's counts, and the pair's from `ip`."""
        keys = [f"fail:user:{user}", f"wait:user:{user}"]
        if ip is not None:
            keys.append(f"fail:pair:{_pair(user, client_key(ip, self.policy()))}")
        await self.store.delete(*keys)

    async def lift_user(self, user: str) -> bool:
        """An operator lifts a user's lock (and wait, and count); True when one was set."""
        return bool(await self.store.delete(f"lock:user:{user}", f"fail:user:{user}", f"wait:user:{user}"))

    async def locked(self, user: str) -> bool:
        """Whether the user is locked now (outside the known networks)."""
        return await self.store.get(f"lock:user:{user}") is not None


def _pair(user: str, network: str) -> str:
    """One store key part for a (user, address) pair; `|` appears in neither a normalised
    username's key use nor an address, and the user is cut so the key stays short."""
    return f"{user[:128]}|{network}"
