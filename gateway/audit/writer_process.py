"""The gateway's side of the audit writer process: the `AuditWriter` interface, with the
writing done in another process (gateway.audit.writer_child, forked from this gateway
process's zygote, gateway.audit.writer_zygote).

Measured (2 cores, PostgreSQL and SQLite): writing one record (scrub, geo, seal, chain,
insert) costs 33-38 µs of CPU, and in the gateway that work took the GIL from the event
loop; under load the in-process writer stored only a third of the records while the
load ran and caught up afterwards. Here a request's share is one tuple of the entry's
values held in a deque (2-4 µs per record in all, pickling included); the rows go to the
child in frames of many (one pickle per frame) and the child does the rest.

Zero loss: every record stays held here, in order, until the child acknowledges it as
stored in the database or the fsync'd spool. If the child dies the supervisor notices
(the link closes), starts another and sends it every record not yet acknowledged,
marked as re-sent: the new child checks those against the trail (by request id), so a
record the dead child stored but could not acknowledge is not stored twice, and a
segment it spooled is claimed and replayed first, as after a gateway crash.

Durability: `strict` records resolve only on acknowledgement (group commit is the
child's: strict records are flushed at once, together). `normal` records are flushed by
the child every `batch_size` records or `flush_interval`; a kill -9 of the child loses
nothing (the gateway re-sends), a kill -9 of the gateway loses only what it had not yet
written to the socket (normal records go out in frames every SEND_DELAY, 20 ms, or
SEND_ROWS records; strict ones at once), since the child then writes what it received
before exiting; a kill -9 of both loses what the child had not flushed yet, as a kill -9
of a gateway with the in-process writer does (at most `flush_interval`). Back-pressure is
as before: `queued` counts every record not yet acknowledged, and `full` compares it with
`queue_size`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import structlog

from gateway.audit.entry import AuditEntry
from gateway.audit.prepare import PrepareRules
from gateway.audit.spool import Spool
from gateway.audit.store import ChainHead
from gateway.audit.writer import RETRY_MAX, RETRY_MIN, AuditUnavailable, WriterSettings
from gateway.audit.writer_link import (
    BYE,
    CLOSE,
    READY,
    Ack,
    Amend,
    Nack,
    Rules,
    Start,
    Status,
    frame,
    read_message,
    records_frames,
)
from gateway.audit.writer_zygote import Zygote, zygote

log = structlog.get_logger("gateway.audit.writer_process")

entry_row = attrgetter(*AuditEntry.__slots__)  # AuditEntry(*entry_row(entry)) == entry
LINGER_CHECKS = 500  # of 10 ms, after a writer's link closed
SEND_ROWS = 256  # normal records go out in frames of this many ...
SEND_DELAY = 0.02  # ... or this long after the first, whichever comes first (strict: at once)
STALL_GRACE = 2 * 15.0  # a writer silent this long past its flush interval while holding records is stalled


class SpoolView:
    """The child's spool as the gateway sees it: `pending` as last reported, and the
    directory's line count for status pages."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.directory = spool.directory
        self.pending = False

    def count_lines(self) -> int:
        return self._spool.count_lines()


@dataclass(slots=True)
class _Held:
    seq: int
    row: tuple
    done: asyncio.Future[None] | None
    entry: AuditEntry | None  # strict records: the producer may change it once refused


class ProcessWriter:
    def __init__(
        self,
        start: Start,
        settings: Callable[[], WriterSettings],
        rules: Callable[[], PrepareRules],
        forks: Zygote | None = None,
    ) -> None:
        """`forks`: where writer processes come from (this process's zygote; tests bring
        one whose writers fail on purpose)."""
        self._start = start
        self._forks = forks or zygote()
        self.pid: int | None = None  # the current child's
        self._settings = settings
        self._rules = rules
        self.instance_id = start.instance_id
        self.spool = SpoolView(Spool(start.spool_dir, start.instance_id))
        self._held: deque[_Held] = deque()  # not yet acknowledged, in sequence order
        self._outbox: list[_Held] = []  # held, not yet written to the current child
        self._next_seq = 1
        self._space = asyncio.Event()
        self._space.set()
        self._send_soon = False  # a send is due this loop turn
        self._send_timer: asyncio.TimerHandle | None = None  # a send is due in SEND_DELAY
        self._link: asyncio.StreamWriter | None = None  # the current child's, once READY
        self._sent_rules: Rules | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0  # children started after one died
        self._children = 0  # children that got ready: what is held may be stored already
        self._counted = (0, 0)  # written, spooled by children that have exited
        self.store_failing = False
        self.stuck = False
        self.head: ChainHead | None = None
        self.written = 0
        self.spooled = 0
        self._child_stuck = False
        self._down = False  # the last child could not be started
        self._heard = 0.0  # monotonic: the child's last word, or when records started waiting

    # -- producers (the AuditWriter interface) ---------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._held)

    @property
    def full(self) -> bool:
        return len(self._held) >= self._settings().queue_size

    def offer(self, entry: AuditEntry) -> bool:
        if self.full:
            return False
        self._push(entry, None)
        return True

    async def put(self, entry: AuditEntry) -> None:
        await self._wait_for_space()
        self._push(entry, None)

    def force(self, entry: AuditEntry) -> None:
        self._push(entry, None)

    async def put_durable(self, entry: AuditEntry) -> None:
        await self._wait_for_space()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(entry, future)
        await future

    async def _wait_for_space(self) -> None:
        while self.full and not self._closing:
            self._space.clear()
            await self._space.wait()

    def _push(self, entry: AuditEntry, done: asyncio.Future[None] | None) -> None:
        held = _Held(self._next_seq, entry_row(entry), done, None if done is None else entry)
        self._next_seq += 1
        if not self._held:
            self._heard = time.monotonic()  # the stall clock starts with the first record waiting
        self._held.append(held)
        if self._supervisor is None or self._supervisor.done():
            # A late record (the relay finishing a message during shutdown): write it too.
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="audit-writer-late")
            return
        if self._link is not None:
            self._outbox.append(held)
            if done is not None or len(self._outbox) >= SEND_ROWS:
                if self._send_timer is not None:
                    self._send_timer.cancel()
                    self._send_timer = None
                if not self._send_soon:  # strict: this loop turn, with whatever else came in it
                    self._send_soon = True
                    asyncio.get_running_loop().call_soon(self._send)
            elif self._send_timer is None and not self._send_soon:
                self._send_timer = asyncio.get_running_loop().call_later(SEND_DELAY, self._send)

    def _send(self) -> None:
        """Every new row in one frame (rules first if they changed)."""
        self._send_soon = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        batch, self._outbox = self._outbox, []
        if self._link is None or not batch:
            return  # no child right now: the supervisor re-sends everything held
        self._write_records(self._link, batch, resent=False)

    def _write_records(self, link: asyncio.StreamWriter, batch: list[_Held] | deque[_Held], *, resent: bool) -> None:
        rules = Rules(self._settings(), self._rules())
        if self._sent_rules is None or rules.settings is not self._sent_rules.settings \
                or rules.rules is not self._sent_rules.rules:
            link.write(frame(rules))
            self._sent_rules = rules
        rows = [(held.done is not None, held.row) for held in batch]
        for data in records_frames(batch[0].seq, resent, rows, SEND_ROWS):
            link.write(data)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the child without waiting for it (its imports take about a second):
        records are held meanwhile and sent once it is ready, after the spool leftovers of
        crashed processes it claims first."""
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="audit-writer")

    async def close(self) -> None:
        """Drain: every record held is stored (the child writes, replays its spool if it
        can, and exits). Records pushed after this still get written (close again)."""
        self._closing = True
        self._space.set()
        if self._link is not None:
            self._send()
            self._link.write(frame(CLOSE))
            self._link = None  # what comes later goes to the next child
        while self._supervisor is not None:
            task = self._supervisor
            await task
            if self._supervisor is task:
                self._supervisor = None

    # -- the supervisor --------------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = RETRY_MIN
        while True:
            started, stopped = await self._run_child()
            self._counted = (self.written, self.spooled)
            if not self._held and self._closing:
                break
            if started:
                delay = RETRY_MIN
                if not stopped:
                    self.restarts += 1
                    log.error("audit writer process died; restarting it", unacknowledged=len(self._held))
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _run_child(self) -> tuple[bool, bool]:
        """One child's life: whether it got ready, and whether it stopped as asked."""
        parent_end, child_end = socket.socketpair()
        try:
            pid = self.pid = await self._forks.fork(child_end)
        except OSError as exc:
            parent_end.close()
            self._start_failed(f"cannot start the audit writer process: {exc}")
            return False, False
        finally:
            child_end.close()
        reader, link = await asyncio.open_unix_connection(sock=parent_end)
        ready = said_bye = False
        try:
            link.write(frame(self._start))
            self._sent_rules = None
            link.write(frame(Rules(self._settings(), self._rules())))
            if await read_message(reader) != READY:
                self._start_failed("the audit writer process exited before it was ready")
                return False, False
            ready = True
            self._down = False
            self._update_stuck()
            self._sent_rules = Rules(self._settings(), self._rules())
            self._outbox = []
            if self._held:
                self._write_records(link, self._held, resent=self._children > 0)
            self._children += 1
            if self._closing:
                link.write(frame(CLOSE))
            else:
                self._link = link
            watchdog = asyncio.get_running_loop().create_task(self._watch_for_stall(pid))
            try:
                said_bye = await self._serve(reader)
            finally:
                watchdog.cancel()
        except Exception:
            log.exception("audit writer link broken; restarting the writer process")
        finally:
            self._link = None
            self._outbox = []
            link.close()
            with contextlib.suppress(ConnectionError):
                await link.wait_closed()
            await _gone(pid, kill=not said_bye)
        return ready, said_bye

    async def _watch_for_stall(self, pid: int) -> None:
        """Kill a writer that holds records and says nothing (stopped, hung, deadlocked):
        nothing else would replace it, and the records it holds would never be stored. A
        working writer acknowledges within its flush interval plus the database timeout,
        or reports itself stuck (database and spool failing: it is retrying, not stalled).
        Its successor gets every record held, as after any death."""
        while True:
            limit = self._settings().flush_interval + STALL_GRACE
            await asyncio.sleep(min(limit, 5.0))
            if self._held and not self._child_stuck and time.monotonic() - self._heard >= limit:
                log.error("audit writer process stalled; killing it", pid=pid, silent_s=round(limit),
                          unacknowledged=len(self._held))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return

    def _start_failed(self, reason: str) -> None:
        if not self._down:
            log.error(reason + "; records held in memory")
        self._down = True
        self._update_stuck()  # the addon refuses requests while no writer can be started

    async def _serve(self, reader: asyncio.StreamReader) -> bool:
        """Handle the child's messages until its link closes; True if it said BYE."""
        said_bye = False
        self._heard = time.monotonic()
        while (message := await read_message(reader)) is not None:
            self._heard = time.monotonic()
            if message == BYE:
                said_bye = True
            elif isinstance(message, Ack):
                self._acknowledged(message.seq)
            elif isinstance(message, Nack):
                self._refused(message.seqs)
            elif isinstance(message, Status):
                self._status(message)
        return said_bye

    def _acknowledged(self, seq: int) -> None:
        held = self._held
        while held and held[0].seq <= seq:
            done = held.popleft().done
            if done is not None and not done.done():
                done.set_result(None)
        if not self.full:
            self._space.set()

    def _refused(self, seqs: tuple[int, ...]) -> None:
        if not self._held:
            return
        first = self._held[0].seq
        failure = AuditUnavailable("audit trail unavailable: database and spool both failed")
        refused = []
        for seq in seqs:
            index = seq - first
            if 0 <= index < len(self._held):
                held = self._held[index]
                if held.done is not None and not held.done.done():
                    held.done.set_exception(failure)
                    refused.append(held)
                held.done = None  # kept held: it is still written once either store is back
        if refused:  # after the producers' handlers ran (they were woken first)
            asyncio.get_running_loop().call_soon(self._amend, refused)

    def _amend(self, refused: list[_Held]) -> None:
        """Send what the producers changed in their refused records (the answer they gave
        instead, a 503), so the record stored later says what the client got."""
        for held in refused:
            if held.entry is None:
                continue
            row = entry_row(held.entry)
            changes = {name: new for name, old, new in zip(AuditEntry.__slots__, held.row, row, strict=True)
                       if new != old}
            held.row, held.entry = row, None
            if changes and self._link is not None:
                self._link.write(frame(Amend(held.seq, changes)))

    def _status(self, status: Status) -> None:
        self.store_failing = status.store_failing
        self._child_stuck = status.stuck
        self.spool.pending = status.spool_pending
        self.written, self.spooled = self._counted[0] + status.written, self._counted[1] + status.spooled
        if status.head is not None:
            self.head = status.head
        self._update_stuck()

    def _update_stuck(self) -> None:
        self.stuck = self._child_stuck or self._down


async def _gone(pid: int, *, kill: bool) -> None:
    """Return once process `pid` has exited (killed first if `kill`): its spool segment's
    lock must be free before the next writer looks for crash leftovers. The link closing
    comes with the exit, so this waits milliseconds; a writer that lingers longer than a
    few seconds after closing its link is killed."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(LINGER_CHECKS):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
