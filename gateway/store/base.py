"""The ephemeral store interface: short-lived state shared by every worker.

Device sessions, the cookie vault, pending logins, challenge state, rate-limit counters,
lockouts and the TOTP replay cache all live behind this one small interface, so that a
single process can keep them in memory and several workers or hosts can share them in
Redis without the callers knowing which. Every method is atomic on its own: callers build
one-time tokens (`take`), fixed-window counters (`incr` with a ttl) and "strictly
increasing" checks (`raise_to`) from single calls, never from read-then-write sequences
that would race between workers.

Keys are `str`, values `bytes`. Integers written by `incr`/`raise_to` are stored as
ASCII decimal (as Redis does), so `get` returns e.g. `b"42"` on every backend. A key holds
either a value or a set, never both; mixing kinds on one key is a programming error.
TTLs are seconds (float) and must be positive; `None` means "no expiry".
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]
"""A pub/sub message handler. Awaited once per message, in publication order."""

MAX_SAFE_INT = 2**53
"""`raise_to` compares numbers inside a Redis Lua script, where they are doubles; beyond
2**53 comparisons stop being exact, so both backends refuse such values alike."""


def check_ttl(ttl: float | None) -> None:
    """Refuse zero, negative and non-finite TTLs: they are always a caller bug, and
    backends would otherwise disagree on them (Redis errors, a dict would keep the key)."""
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


def check_safe_int(value: int) -> None:
    """See MAX_SAFE_INT."""
    if not -MAX_SAFE_INT < value < MAX_SAFE_INT:
        raise ValueError(f"value {value} is outside the exactly comparable range ±2**53")


class Subscription:
    """One listener on one channel, until `close()`.

    Messages are queued per subscription and handed to the async `handler` by a task of
    its own, so a slow or failing handler never delays the store's reader or other
    subscribers. A handler that raises is logged and keeps receiving later messages.
    `immediate`, if given, is called synchronously as each message is read, before any
    other task runs: for cache invalidation, which must win the race against a request
    that arrives right after the announcement.

    `live` says whether delivery is assured right now (the backend is subscribed on a
    working connection); `gaps` counts the interruptions so far, in which messages may
    have been lost. A listener that keeps state derived from the messages (a cache) uses
    it only while `live`, and only from a time with the same `gaps`. A backend may also
    pass `probe`, asked on every `live`: False while a message or the connection's end
    has arrived but not been read yet, known before the backend's reader task runs.
    """

    def __init__(
        self,
        channel: str,
        handler: Handler | None,
        on_close: Callable[[Subscription], Awaitable[None]],
        *,
        immediate: Callable[[bytes], None] | None = None,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        self.channel = channel
        self._probe = probe
        self._handler = handler
        self._immediate = immediate
        self._on_close = on_close
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._live = False
        self._gaps = 0
        self._task = (
            asyncio.get_running_loop().create_task(self._pump(), name=f"store-subscription:{channel}")
            if handler is not None else None
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def live(self) -> bool:
        return self.subscribed and self.quiet()

    @property
    def subscribed(self) -> bool:
        """The backend has confirmed the subscription and not lost it since (as far as
        its reader has seen: `quiet` asks about what it has not seen yet)."""
        return self._live and not self._closed

    def quiet(self) -> bool:
        """Nothing has arrived on the backend's connection that its reader has not handed
        out (the `probe`; True without one). Subscriptions of one store share its
        connection, so one answer holds for all of them."""
        return self._probe is None or self._probe()

    @property
    def gaps(self) -> int:
        return self._gaps

    def mark_live(self) -> None:
        """The backend is subscribed: every message from now on is delivered."""
        self._live = True

    def mark_interrupted(self) -> None:
        """The backend lost its subscription: messages may be lost until `mark_live`."""
        self._live = False
        self._gaps += 1

    def mark_gap(self) -> None:
        """Messages may have been lost, although the subscription is back already."""
        self._gaps += 1

    def deliver(self, message: bytes) -> None:
        """Hand a message over (called by the backend, never blocks)."""
        if self._closed:
            return
        if self._immediate is not None:
            try:
                self._immediate(message)
            except Exception:
                log.exception("pub/sub listener for channel %r failed", self.channel)
        if self._task is not None:
            self._queue.put_nowait(message)

    async def _pump(self) -> None:
        assert self._handler is not None
        while True:
            message = await self._queue.get()
            try:
                await self._handler(message)
            except Exception:
                log.exception("pub/sub handler for channel %r failed", self.channel)

    async def close(self) -> None:
        """Stop delivery. Messages still queued are dropped. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._on_close(self)
        finally:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass


class EphemeralStore(abc.ABC):
    """Atomic key/value, counter, set and pub/sub operations with TTLs."""

    shared: bool = False
    """True when the state lives outside this process: every read is a network round
    trip, and other processes change it (so a copy kept here needs invalidating)."""

    # -- values -------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store a value, replacing any value and any previous expiry."""

    @abc.abstractmethod
    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store only when the key does not exist; True when stored (one winner)."""

    @abc.abstractmethod
    async def replace(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store only when the key exists; True when stored. An update of a record that
        someone else may delete meanwhile (a session ended elsewhere) never recreates it."""

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int:
        """Remove keys; returns how many existed."""

    @abc.abstractmethod
    async def take(self, key: str) -> bytes | None:
        """Get and delete in one step: of concurrent callers, exactly one gets the value.
        For one-time tokens (pending logins, challenges)."""

    @abc.abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Set a new expiry on an existing key; False when the key does not exist."""

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until expiry; None when the key is absent or never expires."""

    # -- counters -----------------------------------------------------------------
    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` (absent = 0) and return the new value. `ttl` applies only when
        this call creates the key, so a counter's window is fixed at its first hit."""

    @abc.abstractmethod
    async def raise_to(self, key: str, value: int, ttl: float | None = None) -> bool:
        """Store `value` if it is strictly greater than the current integer (or the key is
        absent) and return True; otherwise change nothing and return False. On success
        the expiry is reset to `ttl`. Used for "a TOTP time step is accepted only if it is
        later than the last accepted one", across all workers."""

    # -- sets ---------------------------------------------------------------------
    @abc.abstractmethod
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        """Add a member. A given `ttl` (re)sets the whole set's expiry; None keeps it."""

    @abc.abstractmethod
    async def set_remove(self, key: str, member: str) -> bool:
        """Remove a member; True when it was present. An emptied set disappears."""

    @abc.abstractmethod
    async def set_members(self, key: str) -> set[str]:
        """All members (empty when the key is absent)."""

    # -- broadcast ----------------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, channel: str, message: bytes) -> None:
        """Send to every subscriber of `channel` (fire and forget: no delivery promise to
        workers that are disconnected at that moment)."""

    @abc.abstractmethod
    async def subscribe(
        self, channel: str, handler: Handler | None, *, immediate: Callable[[bytes], None] | None = None
    ) -> Subscription:
        """Call `handler` (and `immediate`, see Subscription) for each message published on
        `channel` from now on. Returns once the subscription is active, so a publish that
        follows is received."""

    # -- lifecycle ----------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (for health checks); never raises."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close subscriptions and connections."""
