"""The audit writer: a bounded queue drained in batches, to the database or the spool.

Requests never wait for the database: the `done` hook puts an entry in memory and the
writer task flushes when `batch_size` entries are waiting or the oldest has waited
`flush_interval` (so a kill -9 loses at most that much in `normal` durability). A flush
that the database refuses goes to the local spool instead (fsync'd), and from then on
every batch goes there too until the spool is replayed, so order is kept. `strict`
durability entries carry a future that resolves only once their batch is stored (in the
database or the spool); the writer flushes them at once, so concurrent requests share one
commit (group commit).

Nothing is dropped silently: a full queue makes producers wait (or the addon refuses new
requests), and if neither the database nor the spool can take a batch it stays queued
and the failure is logged until one of them can.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from gateway.audit.entry import AuditEntry
from gateway.audit.spool import Spool
from gateway.audit.store import AuditStore, ChainHead

if TYPE_CHECKING:  # the writer process never loads the policy schema
    from gateway.policy.schema import Policy

log = structlog.get_logger("gateway.audit.writer")

STORE_TIMEOUT = 15.0  # a hung database counts as failed after this long
RETRY_MIN, RETRY_MAX = 0.25, 5.0
REPLAY_CHUNKS_PER_TURN = 8  # then serve the queue again


class AuditUnavailable(RuntimeError):
    """Neither the database nor the spool could store a strict-durability record."""


@dataclass(frozen=True, slots=True)
class WriterSettings:
    batch_size: int = 500
    flush_interval: float = 1.0
    queue_size: int = 20000


class WriterEvents(Protocol):
    """What the writer reports as it goes (the writer process acknowledges through this):
    batches leave the queue head first, so counts are enough to name the records."""

    def stored(self, count: int) -> None:
        """The `count` oldest queued entries are stored (database or spool)."""

    def unavailable(self, count: int) -> None:
        """The `count` oldest queued entries could be stored nowhere (kept queued)."""

    def changed(self) -> None:
        """store_failing, stuck, the spool or the head may have changed."""


class RecordQueue(Protocol):
    """What the proxy, the relay and the console use of a writer: this module's
    `AuditWriter` (in the gateway process) or `ProcessWriter` (a writer process)."""

    stuck: bool
    store_failing: bool

    @property
    def queued(self) -> int: ...

    @property
    def full(self) -> bool: ...

    def offer(self, entry: AuditEntry) -> bool: ...

    async def put(self, entry: AuditEntry) -> None: ...

    def force(self, entry: AuditEntry) -> None: ...

    async def put_durable(self, entry: AuditEntry) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Queued:
    entry: AuditEntry
    done: asyncio.Future[None] | None = None
    dedupe: bool = False  # may already be stored (re-sent after a writer process died)


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        spool: Spool,
        instance_id: str,
        prepare: Callable[[AuditEntry], AuditEntry],
        settings: Callable[[], WriterSettings] = WriterSettings,
        events: WriterEvents | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.instance_id = instance_id
        self._prepare = prepare
        self._settings = settings
        self._events = events
        self._queue: list[_Queued] = []
        self._oldest = 0.0  # monotonic time the oldest queued entry arrived
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._durable = 0  # queued entries whose producer waits for storage
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self.store_failing = False  # the database refused the last attempt
        self.stuck = False  # neither database nor spool could take the last batch
        self.head: ChainHead | None = None  # last head this writer produced
        self.written = 0  # entries stored in the database by this writer
        self.spooled = 0  # entries written to the spool by this writer

    # -- producers -------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self._settings().queue_size

    def offer(self, entry: AuditEntry) -> bool:
        """Queue without waiting; False when full."""
        if self.full:
            return False
        self._push(_Queued(entry))
        return True

    async def put(self, entry: AuditEntry) -> None:
        """Queue, waiting for space when full (back-pressure on the request)."""
        while self.full and not self._closing:
            self._space.clear()
            await self._space.wait()
        self._push(_Queued(entry))

    def force(self, entry: AuditEntry) -> None:
        """Queue beyond the limit: for the few records of requests already answered while
        new ones are being refused; never lose those."""
        self._push(_Queued(entry))

    async def put_durable(self, entry: AuditEntry) -> None:
        """Queue and wait until the entry is stored (database or spool)."""
        while self.full and not self._closing:
            self._space.clear()
            await self._space.wait()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(_Queued(entry, future))
        await future

    def submit(self, entry: AuditEntry, done: asyncio.Future[None] | None = None, *, dedupe: bool = False) -> None:
        """Queue beyond the limit, as the writer process does with what its gateway sent
        (the gateway applies the limit): `done` resolves once stored, `dedupe` when the
        entry may already be stored."""
        self._push(_Queued(entry, done, dedupe))

    def _push(self, item: _Queued) -> None:
        if self._closing and (self._task is None or self._task.done()):
            # A late record (the relay finishing a message during shutdown): write it too.
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer-late")
        if item.done is not None:
            self._durable += 1
        if not self._queue:
            self._oldest = time.monotonic()
            self._wake.set()
        self._queue.append(item)
        if item.done is not None or len(self._queue) >= self._settings().batch_size:
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.spool.claim_orphans)
        if self.spool.pending:
            self.store_failing = False
            self._retry_at = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Drain: write everything queued, replay the spool if the database is back.
        Records queued after this still get written (call close again to wait for them)."""
        self._closing = True
        self._space.set()
        self._wake.set()
        while self._task is not None:
            task = self._task
            try:
                await task
            finally:
                if self._task is task:
                    self._task = None
        await asyncio.to_thread(self.spool.release)

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        tried_at_close = False
        while True:
            await self._wait_for_work()
            if self._queue:
                await self._flush_once()
            progress = False
            if self.spool.pending and time.monotonic() >= self._retry_at:
                progress = await self._replay()
                if self._events is not None:
                    self._events.changed()
            if self._closing and not self._queue:
                if self.spool.pending and (progress or not tried_at_close):
                    # One more replay whatever the back-off says; go on while it works.
                    tried_at_close, self._retry_at = True, 0.0
                    continue
                break

    async def _wait_for_work(self) -> None:
        settings = self._settings()
        while not self._closing:
            now = time.monotonic()
            if self._queue and (self._durable or len(self._queue) >= settings.batch_size
                                or now - self._oldest >= settings.flush_interval or self.stuck):
                return
            deadlines = []
            if self._queue:
                deadlines.append(self._oldest + settings.flush_interval)
            if self.spool.pending:
                if now >= self._retry_at:
                    return
                deadlines.append(self._retry_at)
            timeout = max(min(deadlines) - now, 0.0) if deadlines else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _flush_once(self) -> None:
        settings = self._settings()
        batch = self._queue[: settings.batch_size]
        del self._queue[: len(batch)]
        self._durable -= sum(1 for item in batch if item.done is not None)
        if not self.full:
            self._space.set()
        entries = []
        for item in batch:
            try:
                entries.append(self._prepare(item.entry))
            except Exception:  # never lose a record to a bug in enrichment
                log.exception("audit entry preparation failed; stored unenriched", request_id=item.entry.request_id)
                item.entry.query, item.entry.prepared = None, True
                entries.append(item.entry)
        stored = await self._store(entries, dedupe=any(item.dedupe for item in batch))
        if not stored:
            self._queue[:0] = batch  # keep them, in order, for the next attempt
            self._oldest = time.monotonic()
            failure = AuditUnavailable("audit trail unavailable: database and spool both failed")
            for item in batch:
                if item.done is not None and not item.done.done():
                    item.done.set_exception(failure)
                    item.done = None
            if self._events is not None:
                self._events.unavailable(len(batch))
                self._events.changed()
            await asyncio.sleep(self._retry_delay)
            return
        for item in batch:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
        if self._events is not None:
            self._events.stored(len(batch))
            self._events.changed()

    async def _store(self, entries: list[AuditEntry], *, dedupe: bool = False) -> bool:
        if not self.spool.pending:
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    head = await self.store.append(entries, self.instance_id, dedupe=dedupe)
            except Exception as exc:
                self._database_failed(exc)
            else:
                self._database_ok(head, len(entries))
                return True
        try:
            await asyncio.to_thread(self.spool.append, entries)
        except OSError as exc:
            if not self.stuck:
                log.error("audit spool write failed: records held in memory", error=str(exc), queued=len(self._queue))
            self.stuck = True
            return False
        self.stuck = False
        self.spooled += len(entries)
        return True

    async def _replay(self) -> bool:
        """Replay up to a few chunks, oldest segment first; True if anything moved."""
        chunk = self._settings().batch_size
        progress = False
        for _ in range(REPLAY_CHUNKS_PER_TURN):
            if not self.spool.segments:
                return progress
            segment = self.spool.segments[0]
            entries, offset = await asyncio.to_thread(self.spool.read, segment, chunk)
            if entries:
                try:
                    async with asyncio.timeout(STORE_TIMEOUT):
                        head = await self.store.append(entries, segment.instance_id, dedupe=True)
                except Exception as exc:
                    self._database_failed(exc)
                    return progress
                self._database_ok(head, len(entries))
            progress = progress or offset != segment.offset
            segment.offset = offset
            if await asyncio.to_thread(self.spool.exhausted, segment):
                await asyncio.to_thread(self.spool.finish, segment)
                if not self.spool.pending:
                    log.info("audit spool replayed; writing to the database again")
            elif not entries:
                return progress
        return progress

    def _database_failed(self, exc: BaseException) -> None:
        if not self.store_failing:
            log.error("audit database unavailable; spooling records locally", error=f"{type(exc).__name__}: {exc}")
        self.store_failing = True
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _database_ok(self, head: ChainHead | None, count: int) -> None:
        if self.store_failing:
            log.info("audit database reachable again")
        self.store_failing = self.stuck = False
        self._retry_delay = RETRY_MIN
        self.written += count
        if head is not None and head.instance_id == self.instance_id:
            self.head = head


def settings_from_policy(policy: Callable[[], Policy]) -> Callable[[], WriterSettings]:
    """Writer settings following policy reloads, rebuilt only when the policy changes
    (the writer asks on every request)."""
    cache: list[object] = [None, WriterSettings()]

    def current() -> WriterSettings:
        now = policy()
        if now is not cache[0]:
            audit = now.audit
            cache[:] = [now, WriterSettings(audit.batch_size, audit.flush_interval, audit.queue_size)]
        return cache[1]  # type: ignore[return-value]

    return current
