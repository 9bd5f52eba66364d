"""Redis-backed ephemeral store: shared by every worker and host of one deployment.

Each operation is a single Redis command, a MULTI pipeline or a Lua script, so it stays
atomic across processes. Keys and channels carry a prefix (default "gw:") so that several
gateways, or tests, can share one Redis without seeing each other's state.

Pub/sub uses one dedicated connection per store, read by one task that dispatches to
the subscriptions and, when the connection drops, reconnects with backoff and subscribes
again. Messages published while a worker is disconnected are lost (that is Redis pub/sub);
broadcast is therefore only a fast path, and the state it announces (a revoked session,
say) must also be in the store itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .base import EphemeralStore, Handler, Subscription, check_safe_int, check_ttl
from .socket_watch import SocketWatch

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "gw:"
POOL_SIZE = 100  # connections to Redis per process; more concurrent commands wait for one

# INCRBY, and a ttl only when the key did not exist before (fixed-window counters).
_INCR_WITH_TTL = """
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""

# Store ARGV[1] only when it is greater than the current integer (or the key is absent).
_RAISE_TO = """
local current = redis.call('GET', KEYS[1])
if current then
  local n = tonumber(current)
  if n == nil then return redis.error_reply('ERR value is not an integer') end
  if n >= tonumber(ARGV[1]) then return 0 end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


def _ms(ttl: float) -> int:
    """Seconds to whole milliseconds, rounding up so a tiny ttl never becomes 0."""
    return max(1, math.ceil(ttl * 1000))


class RedisStore(EphemeralStore):
    """EphemeralStore on a `redis.asyncio.Redis` client (created with bytes responses)."""

    shared = True

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = True,
        subscribe_timeout: float = 5.0,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._incr_with_ttl = client.register_script(_INCR_WITH_TTL)
        self._raise_to = client.register_script(_RAISE_TO)
        self._hub = _PubSubHub(client, prefix, subscribe_timeout)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> RedisStore:
        """Connect lazily to `url`. Keepalive and a periodic health check make a silently
        dropped connection (NAT, failover) noticed instead of waiting forever. Every command
        is bounded (2 s) and a failed one is retried once at once on a fresh connection (a
        pooled connection gone stale across a Redis restart), never with a long backoff: a
        login waiting on a dead Redis gets a fast 503, not a 5-second hang."""
        kwargs.setdefault("socket_keepalive", True)
        kwargs.setdefault("health_check_interval", 30)
        kwargs.setdefault("socket_connect_timeout", 2)
        kwargs.setdefault("socket_timeout", 2)
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        kwargs.setdefault("retry_on_error", [RedisConnectionError, RedisTimeoutError])
        # A burst of more requests than connections waits for one (up to the same 2 s
        # bound) instead of failing at once: redis-py's default pool raises
        # MaxConnectionsError, which would answer 503 to a busy but healthy gateway.
        kwargs.setdefault("max_connections", POOL_SIZE)
        kwargs.setdefault("timeout", 2)
        return cls(Redis.from_pool(BlockingConnectionPool.from_url(url, **kwargs)), prefix=prefix)

    @property
    def client(self) -> Redis:
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    def _k(self, key: str) -> str:
        return self._prefix + key

    # -- values -------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        return await self._client.get(self._k(key))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        check_ttl(ttl)
        await self._client.set(self._k(key), value, px=None if ttl is None else _ms(ttl))

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        px = None if ttl is None else _ms(ttl)
        return bool(await self._client.set(self._k(key), value, px=px, nx=True))

    async def replace(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        px = None if ttl is None else _ms(ttl)
        return bool(await self._client.set(self._k(key), value, px=px, xx=True))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self._client.delete(*map(self._k, keys)))

    async def take(self, key: str) -> bytes | None:
        return await self._client.getdel(self._k(key))

    async def expire(self, key: str, ttl: float) -> bool:
        check_ttl(ttl)
        return bool(await self._client.pexpire(self._k(key), _ms(ttl)))

    async def ttl(self, key: str) -> float | None:
        ms = await self._client.pttl(self._k(key))
        return None if ms < 0 else ms / 1000

    # -- counters -----------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_ttl(ttl)
        if ttl is None:
            return int(await self._client.incrby(self._k(key), amount))
        return int(await self._incr_with_ttl(keys=[self._k(key)], args=[amount, _ms(ttl)]))

    async def raise_to(self, key: str, value: int, ttl: float | None = None) -> bool:
        check_ttl(ttl)
        check_safe_int(value)
        px = "" if ttl is None else _ms(ttl)
        return bool(await self._raise_to(keys=[self._k(key)], args=[value, px]))

    # -- sets ---------------------------------------------------------------------
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        check_ttl(ttl)
        if ttl is None:
            await self._client.sadd(self._k(key), member)
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(self._k(key), member)
            pipe.pexpire(self._k(key), _ms(ttl))
            await pipe.execute()

    async def set_remove(self, key: str, member: str) -> bool:
        return bool(await self._client.srem(self._k(key), member))

    async def set_members(self, key: str) -> set[str]:
        return {m.decode() for m in await self._client.smembers(self._k(key))}

    # -- broadcast ----------------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> None:
        await self._client.publish(self._k(channel), message)

    async def subscribe(
        self, channel: str, handler: Handler | None, *, immediate: Callable[[bytes], None] | None = None
    ) -> Subscription:
        return await self._hub.subscribe(channel, handler, immediate)

    # -- lifecycle ----------------------------------------------------------------
    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._hub.close()
        if self._owns_client:
            await self._client.aclose()


class _PubSubHub:
    """The store's one pub/sub connection and the task that reads it.

    Only the reader task creates and replaces the PubSub object. `subscribe` registers a
    handler, sends SUBSCRIBE when a connection is up (otherwise the reader sends it on
    connecting) and waits until Redis confirms, so a publish that follows is delivered.
    Subscriptions are marked live when Redis confirms them and interrupted the moment the
    connection is found broken (see Subscription.live): messages published until the
    reader has reconnected and subscribed again are lost.
    """

    def __init__(self, client: Redis, prefix: str, subscribe_timeout: float) -> None:
        self._client = client
        self._prefix = prefix
        self._subscribe_timeout = subscribe_timeout
        self._subs: dict[str, set[Subscription]] = {}  # full channel name -> subscribers
        self._confirmed: set[str] = set()  # channels confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._watch = SocketWatch(on_replaced=self._reconnected_underneath)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def subscribe(
        self, channel: str, handler: Handler | None, immediate: Callable[[bytes], None] | None
    ) -> Subscription:
        if self._closed:
            raise RuntimeError("store is closed")
        full = self._prefix + channel
        subscription = Subscription(
            channel, handler, self._unsubscribe, immediate=immediate, probe=self._connection_open
        )
        first = full not in self._subs
        self._subs.setdefault(full, set()).add(subscription)
        if full in self._confirmed:
            subscription.mark_live()
            return subscription
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(full, []).append(waiter)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="store-pubsub")
        pubsub = self._pubsub
        if first and pubsub is not None:
            try:
                await pubsub.subscribe(full)
            except (RedisError, OSError):
                pass  # the reader notices the broken connection and resubscribes
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._subscribe_timeout)
        except TimeoutError:
            await subscription.close()
            raise ConnectionError(f"Redis did not confirm the subscription to {channel!r}")
        finally:
            if waiter in self._waiters.get(full, ()):
                self._waiters[full].remove(waiter)
        return subscription

    def _connection_open(self) -> bool:
        """False while anything may be on its way that the reader task has not handed out:
        a message waiting unread, or the connection closed or reset (see SocketWatch),
        although the reader may not have run since. A request handled right then must
        not trust what was announced before."""
        pubsub = self._pubsub
        connection = pubsub.connection if pubsub is not None else None
        return self._watch.quiet(getattr(connection, "_reader", None), getattr(connection, "_writer", None))

    def _reconnected_underneath(self) -> None:
        """redis-py may reconnect and resubscribe a PubSub by itself (its retry on a
        failed read), which the reader task never hears of: still a gap."""
        log.warning("Redis pub/sub connection replaced by the client library; messages may be lost")
        for subscribers in self._subs.values():
            for subscription in subscribers:
                subscription.mark_gap()

    async def _unsubscribe(self, subscription: Subscription) -> None:
        full = self._prefix + subscription.channel
        subscribers = self._subs.get(full)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if subscribers:
            return
        del self._subs[full]
        self._confirmed.discard(full)
        if self._pubsub is not None and not self._closed:
            try:
                await self._pubsub.unsubscribe(full)
            except (RedisError, OSError):
                pass

    async def _connect(self) -> PubSub:
        """A fresh PubSub subscribed to every wanted channel, including ones added while
        this was awaiting (the final check and the assignment have no await between)."""
        pubsub = self._client.pubsub()
        sent: set[str] = set()
        try:
            while missing := set(self._subs) - sent:
                await pubsub.subscribe(*missing)
                sent |= missing
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        return pubsub

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._watch.close()
        self._confirmed.clear()
        for subscribers in self._subs.values():
            for subscription in subscribers:
                subscription.mark_interrupted()
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:
                pass

    async def _run(self) -> None:
        backoff = 0.05
        failing = False  # warn once per outage, not once per retry
        while not self._closed:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    if not self._subs:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    pubsub = await self._connect()
                    backoff = 0.05
                    if failing:
                        log.warning("Redis pub/sub reconnected")
                        failing = False
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost, server restarting, ...
                if self._closed:
                    return
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "Redis pub/sub connection lost (%s); reconnecting", exc)
                failing = True
                await self._disconnect()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        full = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            if full in self._subs:
                self._confirmed.add(full)
                for subscription in self._subs[full]:
                    subscription.mark_live()
            for waiter in self._waiters.pop(full, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "message":
            for subscription in tuple(self._subs.get(full, ())):
                subscription.deliver(message["data"])

    async def close(self) -> None:
        self._closed = True
        for subscribers in tuple(self._subs.values()):
            for subscription in tuple(subscribers):
                await subscription.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._disconnect()
