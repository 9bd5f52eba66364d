"""The local spool: where audit entries wait while the database cannot take them.

Append-only JSON Lines files ("segments") in `<data_dir>/audit-spool/`, one entry per line,
fsync'd once per batch: an answered request's record survives a crash of the gateway or
the host. A segment is locked (flock) by the process writing or replaying it; segments no
live process holds (left by a crash) are claimed at start and replayed first, oldest
first, so the chain keeps the order in which requests were answered. A torn last line
(the process died mid-write, before the fsync that would have made it count) is dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from gateway.audit.entry import AuditEntry

log = structlog.get_logger("gateway.audit.spool")

SPOOL_DIR_NAME = "audit-spool"
_SUFFIX = ".jsonl"


@dataclass
class Segment:
    path: Path
    instance_id: str
    fd: int  # open, flock'd; appended to when `writable`
    offset: int  # bytes already replayed (the header included)
    writable: bool
    entries: int = field(default=0)  # appended by this process


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL_DIR_NAME


class Spool:
    """Blocking file operations; the writer calls them through a worker thread."""

    def __init__(self, directory: Path, instance_id: str) -> None:
        self.directory = directory
        self.instance_id = instance_id
        self.segments: list[Segment] = []

    @property
    def pending(self) -> bool:
        return bool(self.segments)

    def claim_orphans(self) -> int:
        """Take over segments no running process holds; returns how many."""
        if not self.directory.is_dir():
            return 0
        held = {s.path for s in self.segments}
        claimed = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if path in held:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # finished by its owner meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not path.exists():  # replayed and removed between glob and lock
                os.close(fd)
                continue
            header, offset = _read_header(path)
            instance_id = header.get("instance_id") if header else None
            claimed.append(Segment(path, instance_id or self.instance_id, fd, offset, writable=False))
        if claimed:
            log.warning("claimed audit spool left by a stopped process", segments=len(claimed))
        self.segments[:0] = [s for s in claimed]  # older than anything this process spooled
        self.segments.sort(key=lambda s: (s.writable, s.path.name))
        return len(claimed)

    def append(self, entries: list[AuditEntry]) -> None:
        """Write `entries` durably (one fsync) to this process's current segment."""
        segment = self.segments[-1] if self.segments and self.segments[-1].writable else self._new_segment()
        data = "".join(e.to_json() + "\n" for e in entries).encode()
        view = memoryview(data)
        while view:
            written = os.write(segment.fd, view)
            view = view[written:]
        os.fsync(segment.fd)
        segment.entries += len(entries)

    def _new_segment(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}{_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = json.dumps({"spool": 1, "instance_id": self.instance_id}).encode() + b"\n"
        os.write(fd, header)
        os.fsync(fd)
        _fsync_dir(self.directory)
        segment = Segment(path, self.instance_id, fd, len(header), writable=True)
        self.segments.append(segment)
        return segment

    def read(self, segment: Segment, limit: int) -> tuple[list[AuditEntry], int]:
        """Up to `limit` entries after the replayed part, and the offset just past them."""
        entries: list[AuditEntry] = []
        offset = segment.offset
        with open(segment.path, "rb") as handle:
            handle.seek(offset)
            while len(entries) < limit:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    if line and not segment.writable:
                        log.warning("dropping torn last line of an audit spool segment",
                                    segment=segment.path.name, bytes=len(line))
                        offset += len(line)
                    break
                offset += len(line)
                try:
                    entries.append(AuditEntry.from_json(line))
                except (ValueError, TypeError) as exc:
                    log.error("unreadable audit spool line skipped", segment=segment.path.name,
                              offset=offset - len(line), error=str(exc))
        return entries, offset

    def exhausted(self, segment: Segment) -> bool:
        return segment.offset >= os.fstat(segment.fd).st_size

    def finish(self, segment: Segment) -> None:
        """The segment is replayed in full: remove it (then release its lock)."""
        segment.path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        os.close(segment.fd)
        self.segments.remove(segment)

    def release(self) -> None:
        """Close without removing (shutdown with the database still away)."""
        for segment in self.segments:
            os.close(segment.fd)
        self.segments.clear()

    def count_lines(self) -> int:
        """Entries waiting in every segment of the directory (for status output)."""
        total = 0
        for path in self.directory.glob("*" + _SUFFIX) if self.directory.is_dir() else ():
            with open(path, "rb") as handle:
                total += max(sum(1 for _ in handle) - 1, 0)
        return total


def _read_header(path: Path) -> tuple[dict | None, int]:
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first.endswith(b"\n"):
        return None, 0
    try:
        header = json.loads(first)
    except ValueError:
        return None, 0
    if isinstance(header, dict) and "spool" in header:
        return header, len(first)
    return None, 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
