"""One behaviour suite for every EphemeralStore backend: memory and a real Redis.

`Env.store` and `Env.peer` play two workers: for Redis two separate clients (what two
processes would have), for memory the same object (memory is one process by design).
Time moves with `Env.advance`: the memory backend's injected clock jumps, Redis really
waits, so Redis tests shrink TTLs with `expire(key, SHORT)` right before advancing.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from gateway.store import EphemeralStore, MemoryStore, create_store
from gateway.store.redis import RedisStore

SHORT = 0.05  # seconds; long enough for Redis' millisecond expiry, short to wait for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    kind: str
    store: EphemeralStore
    peer: EphemeralStore
    advance: Callable[[float], Awaitable[None]]


async def _cleanup_redis(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if request.param == "memory":
        clock = FakeClock()
        store = MemoryStore(clock=clock)

        async def jump(seconds: float) -> None:
            clock.now += seconds

        yield Env("memory", store, store, jump)
        await store.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"gwtest:{uuid.uuid4().hex}:"
    first = RedisStore.from_url(url, prefix=prefix)
    second = RedisStore.from_url(url, prefix=prefix)

    async def wait(seconds: float) -> None:
        await asyncio.sleep(seconds)

    try:
        yield Env("redis", first, second, wait)
    finally:
        await first.close()
        await second.close()
        await _cleanup_redis(url, prefix)


async def expire_soon(env: Env, key: str) -> None:
    """Make `key` expire: shrink its TTL, then let that much time pass (twice over)."""
    assert await env.store.expire(key, SHORT)
    await env.advance(SHORT * 3)


# -- values --------------------------------------------------------------------------
async def test_get_set_delete(env: Env) -> None:
    s = env.store
    assert await s.get("k") is None
    await s.set("k", b"\x00value\xff")
    assert await s.get("k") == b"\x00value\xff"
    assert await env.peer.get("k") == b"\x00value\xff"
    await s.set("k", b"other")
    assert await s.get("k") == b"other"
    await s.set("k2", b"x")
    assert await s.delete("k", "k2", "missing") == 2
    assert await s.delete() == 0
    assert await s.get("k") is None


async def test_set_with_ttl_expires(env: Env) -> None:
    s = env.store
    await s.set("k", b"v", ttl=30)
    remaining = await s.ttl("k")
    assert remaining is not None and 29 < remaining <= 30
    await env.advance(SHORT)
    assert await s.get("k") == b"v"
    await expire_soon(env, "k")
    assert await s.get("k") is None
    assert await s.ttl("k") is None


async def test_set_without_ttl_clears_previous_expiry(env: Env) -> None:
    s = env.store
    await s.set("k", b"v", ttl=30)
    await s.set("k", b"w")
    assert await s.ttl("k") is None
    assert await s.get("k") == b"w"


async def test_ttl_of_missing_and_persistent_keys(env: Env) -> None:
    assert await env.store.ttl("nothing") is None
    await env.store.set("forever", b"1")
    assert await env.store.ttl("forever") is None


async def test_expire(env: Env) -> None:
    s = env.store
    assert await s.expire("missing", 10) is False
    await s.set("k", b"v")
    assert await s.expire("k", 10) is True
    remaining = await s.ttl("k")
    assert remaining is not None and 9 < remaining <= 10
    await expire_soon(env, "k")
    assert await s.get("k") is None
    assert await s.expire("k", 10) is False


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
async def test_invalid_ttl_is_refused(env: Env, bad: float) -> None:
    with pytest.raises(ValueError):
        await env.store.set("k", b"v", ttl=bad)
    with pytest.raises(ValueError):
        await env.store.incr("k", ttl=bad)


async def test_set_if_absent(env: Env) -> None:
    s = env.store
    assert await s.set_if_absent("k", b"first", ttl=30) is True
    assert await env.peer.set_if_absent("k", b"second", ttl=30) is False
    assert await s.get("k") == b"first"
    await expire_soon(env, "k")
    assert await s.set_if_absent("k", b"third") is True
    assert await s.get("k") == b"third"


async def test_set_if_absent_has_one_winner_under_concurrency(env: Env) -> None:
    results = await asyncio.gather(*(
        (env.store if i % 2 else env.peer).set_if_absent("lock", str(i).encode(), ttl=30)
        for i in range(50)
    ))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await env.store.get("lock") == str(winner).encode()


async def test_take_is_get_and_delete(env: Env) -> None:
    s = env.store
    assert await s.take("k") is None
    await s.set("k", b"token", ttl=30)
    assert await s.take("k") == b"token"
    assert await s.take("k") is None
    assert await s.get("k") is None


async def test_take_is_one_time_under_concurrency(env: Env) -> None:
    for round_ in range(5):
        await env.store.set("token", f"t{round_}".encode(), ttl=30)
        results = await asyncio.gather(*(
            (env.store if i % 2 else env.peer).take("token") for i in range(40)
        ))
        assert [r for r in results if r is not None] == [f"t{round_}".encode()]


async def test_take_of_expired_key(env: Env) -> None:
    await env.store.set("token", b"t", ttl=30)
    await expire_soon(env, "token")
    assert await env.store.take("token") is None


# -- counters ------------------------------------------------------------------------
async def test_incr_basics(env: Env) -> None:
    s = env.store
    assert await s.incr("n") == 1
    assert await s.incr("n", 5) == 6
    assert await s.incr("n", -2) == 4
    assert await s.get("n") == b"4"
    assert await s.ttl("n") is None


async def test_incr_ttl_is_set_only_on_creation(env: Env) -> None:
    s = env.store
    assert await s.incr("window", ttl=30) == 1
    await env.advance(SHORT)
    assert await env.peer.incr("window", ttl=300) == 2
    remaining = await s.ttl("window")
    assert remaining is not None and remaining <= 30  # not extended to 300
    await expire_soon(env, "window")
    assert await s.incr("window", ttl=300) == 1  # a new window starts
    remaining = await s.ttl("window")
    assert remaining is not None and remaining > 30


async def test_incr_on_non_integer_fails(env: Env) -> None:
    await env.store.set("k", b"abc")
    with pytest.raises(Exception):
        await env.store.incr("k")


async def test_incr_is_atomic_under_concurrency(env: Env) -> None:
    results = await asyncio.gather(*(
        (env.store if i % 2 else env.peer).incr("hits", ttl=60) for i in range(100)
    ))
    assert sorted(results) == list(range(1, 101))
    assert await env.store.get("hits") == b"100"
    remaining = await env.store.ttl("hits")
    assert remaining is not None and remaining <= 60


async def test_raise_to_is_strictly_increasing(env: Env) -> None:
    s = env.store
    assert await s.raise_to("step", 10, ttl=90) is True
    assert await s.raise_to("step", 10, ttl=90) is False  # replay of the same step
    assert await s.raise_to("step", 9, ttl=90) is False   # an older step
    assert await env.peer.raise_to("step", 11, ttl=90) is True
    assert await s.get("step") == b"11"
    remaining = await s.ttl("step")
    assert remaining is not None and 89 < remaining <= 90
    await expire_soon(env, "step")
    assert await s.raise_to("step", 1) is True
    assert await s.ttl("step") is None


async def test_raise_to_negative_and_large_values(env: Env) -> None:
    s = env.store
    assert await s.raise_to("v", -5) is True
    assert await s.raise_to("v", -6) is False
    assert await s.raise_to("v", 2**53 - 1) is True
    assert await s.raise_to("v", 2**53 - 2) is False
    with pytest.raises(ValueError):
        await s.raise_to("v", 2**53)


async def test_raise_to_same_value_wins_once_under_concurrency(env: Env) -> None:
    """Two workers verifying the same TOTP code at once: only one may accept it."""
    for step in range(100, 105):
        results = await asyncio.gather(*(
            (env.store if i % 2 else env.peer).raise_to("user:totp", step, ttl=90)
            for i in range(20)
        ))
        assert results.count(True) == 1


async def test_raise_to_ends_at_maximum_under_concurrency(env: Env) -> None:
    values = list(range(1, 61)) * 2
    random.Random(7).shuffle(values)
    results = await asyncio.gather(*(
        (env.store if i % 2 else env.peer).raise_to("m", v, ttl=60) for i, v in enumerate(values)
    ))
    assert await env.store.get("m") == b"60"
    accepted = [v for v, ok in zip(values, results) if ok]
    assert accepted.count(60) == 1
    assert len(accepted) == len(set(accepted))  # no value accepted twice


# -- sets ----------------------------------------------------------------------------
async def test_sets(env: Env) -> None:
    s = env.store
    assert await s.set_members("devices") == set()
    await s.set_add("devices", "a")
    await s.set_add("devices", "b")
    await env.peer.set_add("devices", "a")
    assert await s.set_members("devices") == {"a", "b"}
    assert await s.set_remove("devices", "a") is True
    assert await s.set_remove("devices", "a") is False
    assert await s.set_remove("nothing", "a") is False
    assert await s.set_members("devices") == {"b"}
    assert await s.set_remove("devices", "b") is True
    assert await s.get("devices") is None  # an emptied set disappears
    assert await s.ttl("devices") is None


async def test_set_ttl(env: Env) -> None:
    s = env.store
    await s.set_add("devices", "a", ttl=30)
    await s.set_add("devices", "b")  # no ttl: keeps the existing expiry
    remaining = await s.ttl("devices")
    assert remaining is not None and remaining <= 30
    await s.set_add("devices", "c", ttl=300)  # a ttl refreshes the whole set
    remaining = await s.ttl("devices")
    assert remaining is not None and remaining > 30
    await expire_soon(env, "devices")
    assert await s.set_members("devices") == set()


async def test_set_members_are_unicode(env: Env) -> None:
    await env.store.set_add("names", "Zoë-Δ")
    assert await env.peer.set_members("names") == {"Zoë-Δ"}


async def test_set_add_is_atomic_under_concurrency(env: Env) -> None:
    await asyncio.gather(*(
        (env.store if i % 2 else env.peer).set_add("many", f"m{i}", ttl=60) for i in range(100)
    ))
    assert await env.store.set_members("many") == {f"m{i}" for i in range(100)}


# -- pub/sub -------------------------------------------------------------------------
class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._changed = asyncio.Condition()

    async def __call__(self, message: bytes) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[bytes]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.messages) >= count), timeout
            )
        return self.messages


async def test_publish_reaches_subscriber_in_other_instance(env: Env) -> None:
    inbox = Inbox()
    subscription = await env.peer.subscribe("revocations", inbox)
    for i in range(20):
        await env.store.publish("revocations", f"session-{i}".encode())
    assert await inbox.wait_for(20) == [f"session-{i}".encode() for i in range(20)]
    await subscription.close()


async def test_every_subscriber_gets_each_message_and_channels_are_separate(env: Env) -> None:
    a, b, other = Inbox(), Inbox(), Inbox()
    subs = [
        await env.store.subscribe("policy", a),
        await env.peer.subscribe("policy", b),
        await env.peer.subscribe("other", other),
    ]
    await env.store.publish("policy", b"reload")
    assert await a.wait_for(1) == [b"reload"]
    assert await b.wait_for(1) == [b"reload"]
    await asyncio.sleep(0.05)
    assert other.messages == []
    for sub in subs:
        await sub.close()


async def test_closed_subscription_receives_nothing(env: Env) -> None:
    kept, dropped = Inbox(), Inbox()
    keep = await env.peer.subscribe("ch", kept)
    drop = await env.peer.subscribe("ch", dropped)
    await drop.close()
    await drop.close()  # idempotent
    assert drop.closed
    await env.store.publish("ch", b"one")
    assert await kept.wait_for(1) == [b"one"]
    await asyncio.sleep(0.05)
    assert dropped.messages == []
    await keep.close()
    again = Inbox()
    resubscribed = await env.peer.subscribe("ch", again)
    await env.store.publish("ch", b"two")
    assert await again.wait_for(1) == [b"two"]
    assert kept.messages == [b"one"]
    await resubscribed.close()


async def test_failing_handler_keeps_receiving(env: Env) -> None:
    received: list[bytes] = []
    done = asyncio.Event()

    async def handler(message: bytes) -> None:
        received.append(message)
        if message == b"last":
            done.set()
        raise RuntimeError("handler bug")

    sub = await env.peer.subscribe("ch", handler)
    await env.store.publish("ch", b"first")
    await env.store.publish("ch", b"last")
    await asyncio.wait_for(done.wait(), 5)
    assert received == [b"first", b"last"]
    await sub.close()


async def test_ping(env: Env) -> None:
    assert await env.store.ping() is True


# -- backend specifics ---------------------------------------------------------------
async def test_memory_sweep_drops_expired_keys_nobody_reads() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock, sweep_interval=10)
    for i in range(100):
        await store.set(f"k{i}", b"v", ttl=5)
    await store.set("keep", b"v")
    assert len(store) == 101
    clock.now += 11
    await store.get("keep")  # any operation after the interval sweeps
    assert len(store) == 1


async def test_memory_type_confusion_is_an_error() -> None:
    store = MemoryStore()
    await store.set_add("s", "m")
    with pytest.raises(TypeError):
        await store.get("s")
    await store.set("v", b"1")
    with pytest.raises(TypeError):
        await store.set_add("v", "m")


async def test_redis_keys_carry_prefix_and_stores_with_other_prefix_are_isolated(
    redis_url: str,
) -> None:
    prefix = f"gwtest:{uuid.uuid4().hex}:"
    mine = RedisStore.from_url(redis_url, prefix=prefix + "a:")
    theirs = RedisStore.from_url(redis_url, prefix=prefix + "b:")
    raw = Redis.from_url(redis_url)
    try:
        await mine.set("k", b"mine")
        assert await theirs.get("k") is None
        assert await raw.get(prefix + "a:k") == b"mine"
        inbox = Inbox()
        sub = await theirs.subscribe("ch", inbox)
        await mine.publish("ch", b"x")
        await asyncio.sleep(0.1)
        assert inbox.messages == []
        await sub.close()
    finally:
        await mine.close()
        await theirs.close()
        await raw.aclose()
        await _cleanup_redis(redis_url, prefix)


async def _kill_pubsub_connection(raw: Redis, name: str) -> None:
    clients = await raw.client_list(_type="pubsub")
    ids = [c["id"] for c in clients if c.get("name") == name]
    assert ids, f"no pub/sub connection named {name}"
    for client_id in ids:
        await raw.client_kill_filter(_id=client_id)


async def test_redis_subscriber_reconnects_after_connection_loss(redis_url: str) -> None:
    prefix = f"gwtest:{uuid.uuid4().hex}:"
    name = f"gwtest-{uuid.uuid4().hex[:12]}"
    subscriber = RedisStore.from_url(redis_url, prefix=prefix, client_name=name)
    publisher = RedisStore.from_url(redis_url, prefix=prefix)
    raw = Redis.from_url(redis_url)
    inbox = Inbox()
    try:
        await subscriber.subscribe("revocations", inbox)
        await publisher.publish("revocations", b"before")
        await inbox.wait_for(1)
        await _kill_pubsub_connection(raw, name)
        # Messages sent while the worker is disconnected are lost: keep announcing until
        # one arrives, as a caller relying on broadcast as a fast path would tolerate.
        for _ in range(200):
            await publisher.publish("revocations", b"after")
            await asyncio.sleep(0.05)
            if b"after" in inbox.messages:
                break
        assert b"after" in inbox.messages
        assert inbox.messages[0] == b"before"
    finally:
        await subscriber.close()
        await publisher.close()
        await raw.aclose()


async def test_redis_ping_is_false_when_unreachable() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_redis_subscribe_fails_clearly_when_unreachable() -> None:
    store = RedisStore(
        Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2),
        subscribe_timeout=0.5,
    )
    try:
        with pytest.raises(ConnectionError):
            await store.subscribe("ch", Inbox())
    finally:
        await store.close()


# -- factory -------------------------------------------------------------------------
async def test_create_store_memory() -> None:
    assert isinstance(create_store(None), MemoryStore)
    assert isinstance(create_store(""), MemoryStore)
    assert isinstance(create_store("memory://"), MemoryStore)


async def test_create_store_redis(redis_url: str) -> None:
    store = create_store(redis_url)
    assert isinstance(store, RedisStore) and store.prefix == "gw:"
    assert await store.ping()
    await store.close()
    sep = "&" if "?" in redis_url else "?"
    store = create_store(f"{redis_url}{sep}prefix=tenant1:")
    assert isinstance(store, RedisStore) and store.prefix == "tenant1:"
    assert await store.ping()
    await store.close()
    store = create_store(redis_url, prefix="explicit:")
    assert isinstance(store, RedisStore) and store.prefix == "explicit:"
    await store.close()


def test_create_store_rejects_unknown_scheme_without_echoing_secrets() -> None:
    with pytest.raises(ValueError) as info:
        create_store("memcached://user:s3cret@host/")
    assert "s3cret" not in str(info.value)
