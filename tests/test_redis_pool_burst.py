"""A burst of concurrent store commands larger than the connection pool waits for a
connection instead of failing: redis-py's default pool raises MaxConnectionsError past its
limit, which the gateway answered as 503 "session store unavailable" under load."""

from __future__ import annotations

import asyncio
import uuid

from gateway.store.redis import POOL_SIZE, RedisStore


async def test_more_concurrent_commands_than_pooled_connections_all_succeed(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=f"burst-{uuid.uuid4().hex}:")
    client = store.client
    try:
        # Each BLPOP holds its connection for 50 ms: 2.5x the pool at once.
        results = await asyncio.gather(
            *(client.blpop([f"{store.prefix}nothing"], timeout=0.05) for _ in range(POOL_SIZE * 5 // 2)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert results == [None] * len(results)
