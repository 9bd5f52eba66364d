"""Exporting the latest chain head outside the database.

The chain proves that what is in the database was not edited, reordered or thinned out;
only a copy of the head kept elsewhere proves that nothing was cut off its end. Every
`head_export_interval` (and at shutdown) the instance's head goes to a log line, to
`<data_dir>/heads.jsonl` (append-only, fsync'd) and, when configured, to the alerts
webhook; `pms-gateway audit verify --heads FILE` checks the trail still reaches each.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select

from gateway.audit.store import ChainHead
from gateway.db import Database, audit_chain_heads
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.audit.heads")

HEADS_FILE_NAME = "heads.jsonl"

Publish = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ExportedHead:
    instance_id: str
    seq: int
    mac: str
    exported_at: str


def heads_path(data_dir: Path) -> Path:
    return data_dir / HEADS_FILE_NAME


def read_exported_heads(path: Path) -> list[ExportedHead]:
    """Every head in an export file (a heads.jsonl, or lines copied from the log)."""
    heads = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
            heads.append(ExportedHead(str(data["instance_id"]), int(data["seq"]), str(data["mac"]),
                                      str(data.get("exported_at", ""))))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: not an exported chain head") from None
    return heads


class HeadExporter:
    def __init__(
        self,
        database: Database,
        instance_id: str,
        path: Path,
        interval: Callable[[], float],
        publish: Publish | None = None,
    ) -> None:
        self.database = database
        self.instance_id = instance_id
        self.path = path
        self._interval = interval
        self._publish = publish
        self._last: ChainHead | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-head-export")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.export()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval())
            await self.export()

    async def export(self) -> ChainHead | None:
        """Export the head if it moved since the last export; never raises."""
        try:
            head = await self._read()
        except Exception as exc:
            log.warning("audit chain head not exported: database unavailable", error=type(exc).__name__)
            return None
        if head is None or head == self._last:
            return head
        line = {
            "instance_id": head.instance_id, "seq": head.seq, "mac": head.mac,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            await asyncio.to_thread(_append_line, self.path, json.dumps(line, separators=(",", ":")))
        except OSError as exc:
            log.error("audit chain head not written to file", path=str(self.path), error=str(exc))
        log.info("audit chain head", **line)
        if self._publish is not None:
            try:
                await self._publish({"event": "audit_chain_head", **line})
            except Exception as exc:
                log.warning("audit chain head webhook failed", error=str(exc))
        self._last = head
        return head

    async def _read(self) -> ChainHead | None:
        async with self.database.connect() as conn:
            row = (
                await conn.execute(
                    select(audit_chain_heads.c.seq, audit_chain_heads.c.mac).where(
                        audit_chain_heads.c.instance_id == self.instance_id
                    )
                )
            ).first()
        return None if row is None or row.seq == 0 else ChainHead(self.instance_id, int(row.seq), row.mac)


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
