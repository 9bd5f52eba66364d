"""In-process ephemeral store: the default for a single gateway process.

Atomicity comes for free: no method awaits between reading and writing, and asyncio runs
one coroutine at a time, so every operation is indivisible. State is lost on restart
(users log in again), which is the accepted price of needing no Redis.

Expiry is lazy (an expired key is dropped when touched) plus a sweep of all expired keys
at most every `sweep_interval` seconds, run by whichever operation comes first after the
interval, so keys that are never read again cannot accumulate. The clock is injectable
so that tests can move time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .base import EphemeralStore, Handler, Subscription, check_safe_int, check_ttl


class MemoryStore(EphemeralStore):
    """Dict-backed EphemeralStore. Not shared between processes."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval: float = 60.0,
    ) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._data: dict[str, bytes | set[str]] = {}
        self._expires: dict[str, float] = {}
        self._subscriptions: dict[str, set[Subscription]] = {}

    def __len__(self) -> int:
        """Keys currently held, including expired ones not yet swept (for tests/metrics)."""
        return len(self._data)

    # -- internals ----------------------------------------------------------------
    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep(now)
        return now

    def sweep(self, now: float | None = None) -> int:
        """Drop every expired key now; returns how many were dropped."""
        now = self._clock() if now is None else now
        self._next_sweep = now + self._sweep_interval
        dead = [key for key, at in self._expires.items() if at <= now]
        for key in dead:
            del self._expires[key]
            self._data.pop(key, None)
        return len(dead)

    def _lookup(self, key: str) -> bytes | set[str] | None:
        now = self._now()
        at = self._expires.get(key)
        if at is not None and at <= now:
            del self._expires[key]
            self._data.pop(key, None)
            return None
        return self._data.get(key)

    def _value(self, key: str) -> bytes | None:
        value = self._lookup(key)
        if isinstance(value, set):
            raise TypeError(f"key {key!r} holds a set, not a value")
        return value

    def _set_of(self, key: str) -> set[str] | None:
        value = self._lookup(key)
        if value is not None and not isinstance(value, set):
            raise TypeError(f"key {key!r} holds a value, not a set")
        return value

    def _int(self, key: str) -> int | None:
        value = self._value(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"key {key!r} does not hold an integer") from None

    def _store(self, key: str, value: bytes | set[str], ttl: float | None) -> None:
        self._data[key] = value
        if ttl is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = self._clock() + ttl

    # -- values -------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        return self._value(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        check_ttl(ttl)
        self._lookup(key)
        self._store(key, bytes(value), ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        if self._lookup(key) is not None:
            return False
        self._store(key, bytes(value), ttl)
        return True

    async def replace(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        if self._lookup(key) is None:
            return False
        self._store(key, bytes(value), ttl)
        return True

    async def delete(self, *keys: str) -> int:
        removed = 0
        for key in keys:
            if self._lookup(key) is not None:
                del self._data[key]
                self._expires.pop(key, None)
                removed += 1
        return removed

    async def take(self, key: str) -> bytes | None:
        value = self._value(key)
        if value is not None:
            del self._data[key]
            self._expires.pop(key, None)
        return value

    async def expire(self, key: str, ttl: float) -> bool:
        check_ttl(ttl)
        if self._lookup(key) is None:
            return False
        self._expires[key] = self._clock() + ttl
        return True

    async def ttl(self, key: str) -> float | None:
        if self._lookup(key) is None or key not in self._expires:
            return None
        return max(0.0, self._expires[key] - self._clock())

    # -- counters -----------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_ttl(ttl)
        current = self._int(key)
        new = (current or 0) + amount
        self._data[key] = str(new).encode()
        if current is None and ttl is not None:
            self._expires[key] = self._clock() + ttl
        return new

    async def raise_to(self, key: str, value: int, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        check_safe_int(value)
        current = self._int(key)
        if current is not None and current >= value:
            return False
        self._store(key, str(value).encode(), ttl)
        return True

    # -- sets ---------------------------------------------------------------------
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        check_ttl(ttl)
        members = self._set_of(key)
        if members is None:
            members = self._data[key] = set()
        members.add(member)
        if ttl is not None:
            self._expires[key] = self._clock() + ttl

    async def set_remove(self, key: str, member: str) -> bool:
        members = self._set_of(key)
        if not members or member not in members:
            return False
        members.discard(member)
        if not members:
            del self._data[key]
            self._expires.pop(key, None)
        return True

    async def set_members(self, key: str) -> set[str]:
        return set(self._set_of(key) or ())

    # -- broadcast ----------------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> None:
        for subscription in tuple(self._subscriptions.get(channel, ())):
            subscription.deliver(bytes(message))

    async def subscribe(
        self, channel: str, handler: Handler | None, *, immediate: Callable[[bytes], None] | None = None
    ) -> Subscription:
        subscription = Subscription(channel, handler, self._unsubscribe, immediate=immediate)
        subscription.mark_live()  # one process: nothing to lose
        self._subscriptions.setdefault(channel, set()).add(subscription)
        return subscription

    async def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.channel)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.channel]

    # -- lifecycle ----------------------------------------------------------------
    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for subscribers in tuple(self._subscriptions.values()):
            for subscription in tuple(subscribers):
                await subscription.close()
