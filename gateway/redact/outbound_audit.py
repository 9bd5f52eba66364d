"""One audit record per outbound notification, the same shape for mail and HTTP.

The hotel must be able to show what left the building and what was removed on the way,
so a record names the channel, the destination, how many values each detector found and
what happened to the message; never the values themselves.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Action = Literal["forwarded", "blocked", "refused", "deferred", "held"]

log = logging.getLogger("gateway.audit.outbound")


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """What one outbound message did.

    action: forwarded (the next hop accepted it), blocked (the policy stopped it),
    refused (the next hop refused it for good), deferred (the next hop was unreachable
    or asked to retry; the sender was told to try again), held (it could not be read whole
    and waits in the relay's hold queue for the operator).
    """

    channel: str
    destination: str
    detectors: dict[str, int]
    action: Action
    reason: str | None = None
    message_id: str | None = None
    bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)


class OutboundAudit(Protocol):
    async def __call__(self, record: OutboundRecord) -> None: ...


class LogAudit:
    """Until the audit writer is plugged in: one JSON line per record on the log."""

    async def __call__(self, record: OutboundRecord) -> None:
        log.info(record.to_json())


async def emit(audit: OutboundAudit | None, record: OutboundRecord) -> None:
    """Hand `record` to the sink. A failing sink is logged, not raised: the message has
    already been acted on and the sender must still get its answer."""
    if audit is None:
        return
    try:
        await audit(record)
    except Exception:
        log.exception("outbound audit sink failed; record: %s", record.to_json())


AlertHook = Callable[[OutboundRecord], Awaitable[object] | object]
"""What the relay and its delivery queue call to alert the operator (blocked, held,
delayed, failed mail)."""


async def alert(hook: AlertHook | None, record: OutboundRecord) -> None:
    """Call an alert hook; its failure is logged, never the sender's or the queue's problem."""
    if hook is None:
        return
    try:
        result = hook(record)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("outbound alert hook failed")


def one_line(text: object) -> str:
    """A remote answer or reason as one bounded line, fit for a header, a log or a record."""
    return " ".join(str(text).split())[:400]
