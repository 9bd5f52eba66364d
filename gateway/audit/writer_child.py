"""The audit writer process (forked by gateway.audit.writer_zygote, or run directly as
`python -m gateway.audit.writer_child FD`).

One per gateway process (`ProcessWriter` asks for it), so the work
that costs the audit trail its CPU (scrubbing, geo look-ups, sealing personal fields,
the hash chain, the database driver, the spool's fsync) never takes the GIL from the
gateway's event loop. It runs the ordinary `AuditWriter` (same batching, spool, replay
and group commit) fed by the records arriving on the socket `FD`, and acknowledges each
one once it is stored in the database or the fsync'd spool.

It imports no web stack. It ignores SIGINT and SIGTERM: a Ctrl-C or a service stop
reaches the whole process group, and the writer must outlive its gateway's drain. It
stops when the gateway says so (after writing everything) or when the link closes (the
gateway died: it writes what it received, then exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import deque

import structlog

from gateway.audit.entry import AuditEntry
from gateway.audit.prepare import RulesPreparer
from gateway.audit.spool import Spool
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter
from gateway.audit.writer_link import (
    BYE,
    CLOSE,
    READY,
    Ack,
    Amend,
    Nack,
    Records,
    Rules,
    Start,
    Status,
    frame,
    read_message,
)
from gateway.db import Database
from gateway.db.engine import create_engine
from gateway.logs import configure_logging
from gateway.risk.geoip import GeoLocator

log = structlog.get_logger("gateway.audit.writer_process")


class Acknowledger:
    """The writer's events turned into messages: it stores its queue head first, so the
    `count` oldest records received are the ones a batch stored."""

    def __init__(self, link: asyncio.StreamWriter) -> None:
        self.link = link
        self.writer: AuditWriter | None = None
        self.held: deque[list] = deque()  # [seq, strict, entry] in the writer's queue order
        self._status: Status | None = None

    def received(self, seq: int, strict: bool, entry: AuditEntry) -> None:
        self.held.append([seq, strict, entry])

    def amend(self, seq: int, changes: dict[str, object]) -> None:
        """Change a record still queued (the same object the writer holds); one already
        stored stays as it was stored."""
        if self.held:
            index = seq - int(self.held[0][0])
            if 0 <= index < len(self.held):
                entry = self.held[index][2]
                for name, value in changes.items():
                    setattr(entry, name, value)

    def stored(self, count: int) -> None:
        last = 0
        for _ in range(count):
            last = int(self.held.popleft()[0])
        self.send(Ack(last))

    def unavailable(self, count: int) -> None:
        failed = []
        for index in range(min(count, len(self.held))):
            item = self.held[index]
            if item[1]:
                failed.append(int(item[0]))
                item[1] = False  # its producer was told: as the in-process writer does
        if failed:
            self.send(Nack(tuple(failed)))

    def changed(self) -> None:
        writer = self.writer
        if writer is None:
            return
        status = Status(writer.store_failing, writer.stuck, writer.spool.pending, writer.written, writer.spooled,
                        writer.head)
        if status != self._status:
            self._status = status
            self.send(status)

    def send(self, message: object) -> None:
        if not self.link.is_closing():
            self.link.write(frame(message))


def build_writer(start: Start, current: list[Rules], events: Acknowledger) -> AuditWriter:
    """The ordinary writer on this process's own engine (the gateway already brought the
    schema up to date: nothing to migrate, and no connection needed to start, so a
    database that is away sends records to the spool as in the gateway). `current[0]`:
    the rules in force, replaced when the gateway sends new ones."""
    database = Database(create_engine(start.database_url), start.schema_version, ())
    return AuditWriter(
        AuditStore(database, start.keys),
        Spool(start.spool_dir, start.instance_id),
        start.instance_id,
        RulesPreparer(lambda: current[0].rules, GeoLocator(start.geoip)),
        lambda: current[0].settings,
        events,
    )


async def serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, link = await asyncio.open_unix_connection(sock=sock)
    start = await read_message(reader)
    rules = await read_message(reader)
    if not isinstance(start, Start) or not isinstance(rules, Rules):
        return 2  # not our gateway at the other end
    configure_logging(start.log_format, start.log_level)
    events = Acknowledger(link)
    current = [rules]
    writer = events.writer = build_writer(start, current, events)
    await writer.start()
    link.write(frame(READY))
    events.changed()
    loop = asyncio.get_running_loop()
    closing = False
    try:
        while (message := await read_message(reader)) is not None:
            if isinstance(message, Records):
                for offset, (strict, row) in enumerate(message.rows):
                    entry = AuditEntry(*row)
                    events.received(message.first_seq + offset, strict, entry)
                    done = loop.create_future() if strict else None
                    if done is not None:
                        done.add_done_callback(_retrieve)
                    writer.submit(entry, done, dedupe=message.resent)
            elif isinstance(message, Amend):
                events.amend(message.seq, message.changes)
            elif isinstance(message, Rules):
                current[0] = message
            elif message == CLOSE:
                closing = True
                break
    finally:
        await writer.close()  # drains: every record received is stored (or spooled)
        events.changed()
        await writer.store.database.close()
        if closing:
            events.send(BYE)  # asked to stop, stopped: not a death
        if not link.is_closing():
            link.close()
            try:
                await link.wait_closed()
            except ConnectionError:
                pass
    return 0


def batch_scheduling() -> None:
    """SCHED_BATCH (Linux): the writer gets its fair share of a core but does not preempt
    the gateway's event loop each time a frame of records wakes it up (measured: with both
    on one core, the gateway lost about 9 % of its samples inside the socket write that
    woke the writer)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _retrieve(future: asyncio.Future[None]) -> None:
    """The gateway learns of failures through Nack; keep asyncio quiet about them."""
    if not future.cancelled():
        future.exception()


def run(fd: int) -> int:
    """The writer's life on the link socket `fd`; its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Until `Start` names the gateway's format: structlog's own default prints every local
    # of a failure's frames (rich tracebacks), `Start`'s database password and keys too.
    configure_logging("auto", "info")
    batch_scheduling()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(serve(fd))
    except Exception:
        log.exception("audit writer process failed")
        return 1
    finally:
        sys.stderr.flush()


def main() -> None:
    sys.exit(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
