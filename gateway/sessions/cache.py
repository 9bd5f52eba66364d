"""The per-worker cache of live sessions: one Redis round trip less per request.

With a shared (Redis) store every request of a session used to read its record, a round
trip of about 50 µs of this worker's CPU, 20 µs of Redis's and 80 µs of latency on
localhost. This cache keeps, per session, the decrypted fields of its record as last
read, for at most `LIFETIME` seconds, and only while it is told of every change:

- every write of a session record here forgets the entry at once, after the write (the
  worker that changed a session never serves the old version), and is announced on
  `SESSION_CHANGED_CHANNEL`; every end of a session (logout, expiry, replacement,
  revocation from the CLI or the console) is announced on `SESSION_ENDED_CHANNEL`. The
  announcements forget the entry on every worker as they are read, before any request
  that follows them is handled;
- an entry is used only while both subscriptions are live and have had no interruption
  since it was read: when the pub/sub connection drops the cache is flushed and bypassed
  until Redis has confirmed the subscriptions again (messages published meanwhile are
  lost, so nothing read before can be trusted). "Live" is asked of the socket itself
  (store/socket_watch.py): while an announcement or the connection's end has reached
  this host but is not read yet, the store is read instead, so what was announced before
  a request arrived is never overtaken by it;
- a read that started before an invalidation is not kept (the generation counter);
- `LIFETIME` bounds the rest: a drop nobody noticed yet (a silent network loss) leaves
  an entry usable for at most that long.

A worker that never subscribed (the CLI, a test's bare SessionManager) and the in-memory
store (one process, whose reads cost nothing) do not cache at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.sessions.revocation import SESSION_ENDED_CHANNEL
from gateway.store.base import EphemeralStore, Subscription

SESSION_CHANGED_CHANNEL = "session-changed"
LIFETIME = 0.5  # seconds an entry is used at most: the bound on a missed announcement
CAPACITY = 4096  # sessions kept per worker (the oldest entry goes first)

Ticket = tuple[int, int]
"""(generation, gaps) when a read started: its result is kept only if both still hold."""


class SessionCache:
    def __init__(
        self, lifetime: float = LIFETIME, capacity: int = CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        self.clock = clock  # monotonic, never the manager's clock (tests move that one)
        self._feeds: list[Subscription] = []
        self._entries: dict[str, tuple[dict, float, int]] = {}  # id_hash -> (fields, until, gaps)
        self._generation = 0

    async def start(self, store: EphemeralStore) -> None:
        """Listen for changes and start caching (only for a store shared between processes)."""
        if not store.shared or self._feeds:
            return
        for channel in (SESSION_ENDED_CHANNEL, SESSION_CHANGED_CHANNEL):
            self._feeds.append(await store.subscribe(channel, None, immediate=self._announced))

    async def stop(self) -> None:
        feeds, self._feeds = self._feeds, []
        for feed in feeds:
            await feed.close()
        self.forget_all()

    # -- reads -----------------------------------------------------------------------

    def lookup(self, id_hash: str) -> dict | None:
        """The session's fields as last read, if they may still be used."""
        entry = self._entries.get(id_hash)
        if entry is None:
            return None
        gaps = self._gaps()
        if gaps is None:
            return None  # the feed is down, or a message is on its way: read the store
        if entry[2] != gaps:
            self._entries.clear()  # the feed dropped since: nothing read before is trusted
            return None
        if self.clock() >= entry[1]:
            del self._entries[id_hash]
            return None
        return entry[0]

    def ticket(self) -> Ticket | None:
        """Taken before reading the store; None when nothing read now may be kept."""
        gaps = self._gaps()
        return None if gaps is None else (self._generation, gaps)

    def keep(self, id_hash: str, fields: dict, ticket: Ticket | None) -> None:
        """Keep a record read with `ticket`, unless anything was invalidated since."""
        if ticket is None or ticket != (self._generation, self._gaps()):
            return
        self._entries.pop(id_hash, None)
        if len(self._entries) >= self.capacity:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[id_hash] = (fields, self.clock() + self.lifetime, ticket[1])

    # -- invalidation ----------------------------------------------------------------

    def forget(self, id_hash: str) -> None:
        """This session changed or ended: read it from the store next time, here and now."""
        self._generation += 1
        self._entries.pop(id_hash, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    def _announced(self, message: bytes) -> None:
        self.forget(message.decode(errors="replace"))

    def _gaps(self) -> int | None:
        """Interruptions of the feeds so far, or None when the cache may not be used now."""
        feeds = self._feeds
        # Both feeds come from one store, over one connection: one probe answers for both.
        if not feeds or not all(feed.subscribed for feed in feeds) or not feeds[0].quiet():
            return None
        return sum(feed.gaps for feed in self._feeds)

    def __len__(self) -> int:
        return len(self._entries)
