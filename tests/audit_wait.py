"""Waiting for audit records in tests: the writer flushes in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.audit.query import AuditReader, QueryFilter


async def audited(env, match: Callable[[dict], bool], filters: QueryFilter = QueryFilter()) -> list[dict]:
    """The decrypted records matching `match`, once at least one is stored (or fail)."""
    reader = AuditReader(env.services.database, env.services.audit.keys)
    for _ in range(200):
        found = [r async for r in reader.records(filters) if match(r)]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("no matching audit record")
