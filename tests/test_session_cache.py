"""The per-worker session cache (gateway/sessions/cache.py) never outlives what it is told.

A session ended on one worker (revoked from the CLI or the console, replaced by a login
on another device) is refused by every worker within a second; a worker whose pub/sub
connection drops flushes and bypasses its cache until it is subscribed again; an entry
nobody announced a change of is used for a bounded time only. Real Redis throughout; the
gateway-level tests run two gateways on one Redis, as two workers or hosts would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import aiohttp
from redis.asyncio import Redis

from gateway.auth.keys import KeyRing
from gateway.policy.schema import Policy
from gateway.sessions.cache import LIFETIME, SessionCache
from gateway.sessions.manager import SessionManager
from gateway.sessions.model import token_hash
from gateway.sessions.revocation import end_user_sessions
from gateway.store import create_store
from gateway.store.redis import RedisStore
from tests.login_env import Browser, LoginEnv, login_env, store_url_for

WITHIN = 1.0  # seconds: the promise to every worker


class FrozenClock:
    """The cache's clock, held still: an entry expires only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(predicate, within: float = WITHIN) -> None:
    """Poll `predicate` until it holds, failing once `within` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s"
        await asyncio.sleep(0.01)


async def _kill_pubsub(redis_url: str, client_name: str) -> None:
    """CLIENT KILL of this store's pub/sub connection only (by its name): other tests
    sharing the Redis keep theirs."""
    raw = Redis.from_url(redis_url)
    try:
        ids = [c["id"] for c in await raw.client_list(_type="pubsub") if c.get("name") == client_name]
        assert ids, f"no pub/sub connection named {client_name}"
        for client_id in ids:
            await raw.client_kill_filter(_id=client_id)
    finally:
        await raw.aclose()


# -- two workers as two SessionManagers on one Redis ----------------------------------------


@contextlib.asynccontextmanager
async def _workers(redis_url: str, client_name: str | None = None):
    """Two listening workers with their own connections; the second's cache clock frozen."""
    prefix = f"gwtest-{uuid.uuid4().hex[:12]}:"
    extra = {"client_name": client_name} if client_name else {}
    stores = [RedisStore.from_url(redis_url, prefix=prefix), RedisStore.from_url(redis_url, prefix=prefix, **extra)]
    keyring, policy = KeyRing([("k1", os.urandom(32))]), Policy()
    first, second = (SessionManager(store, keyring, lambda: policy) for store in stores)
    second.cache = SessionCache(clock=FrozenClock())
    await first.listen()
    await second.listen()
    try:
        yield first, second
    finally:
        for manager in (first, second):
            await manager.stop_listening()
            await manager.store.close()


async def _start(manager: SessionManager, user: str = "alice") -> str:
    session_id, _ = await manager.create(
        user=user, group=None, device_id="dev-" + user, ip="192.0.2.1", user_agent="ua",
        login_type="password", vault={"PMSSESSID": "pms-" + user},
    )
    return session_id


async def _silently_remove(manager: SessionManager, session_id: str) -> None:
    """The record goes, and nobody is told: an announcement lost on the way."""
    await manager.store.delete("sess:" + token_hash(session_id))


async def test_an_unannounced_change_is_served_no_longer_than_the_lifetime(redis_url):
    async with _workers(redis_url) as (first, second):
        session_id = await _start(first)
        assert (await second.get(session_id)) is not None
        await _silently_remove(first, session_id)
        assert (await second.get(session_id)) is not None  # cached: no store read
        second.cache.clock.now += LIFETIME
        assert await second.get(session_id) is None
        assert 0 < LIFETIME <= 0.5


async def test_announced_changes_reach_the_other_worker_and_at_once_this_one(redis_url):
    async with _workers(redis_url) as (first, second):
        alice, bob, carla = await _start(first, "alice"), await _start(first, "bob"), await _start(first, "carla")
        for session_id in (alice, bob, carla):
            await first.get(session_id)
            await second.get(session_id)
        # A vault rotated by the PMS on the first worker: seen there at once, on the other
        # on the announcement (its cache clock never moves).
        changed = await first.get(alice)
        changed.vault = {"PMSSESSID": "rotated"}
        await first.save(changed)
        assert (await first.get(alice)).vault == {"PMSSESSID": "rotated"}

        async def second_sees_rotation() -> bool:
            return (await second.get(alice)).vault == {"PMSSESSID": "rotated"}

        await eventually(second_sees_rotation)
        # Logout on the first worker; revocation from elsewhere (the CLI's own store).
        assert await first.end(await first.get(bob), "logout")
        assert await first.get(bob) is None
        cli = RedisStore.from_url(redis_url, prefix=first.store.prefix)
        try:
            assert await end_user_sessions(cli, "carla", "revoked") == 1
        finally:
            await cli.close()
        for session_id in (bob, carla):
            async def refused(session_id=session_id) -> bool:
                return await second.get(session_id) is None
            await eventually(refused)


async def test_a_dropped_pubsub_connection_flushes_and_bypasses_the_cache(redis_url):
    name = f"gwtest-{uuid.uuid4().hex[:12]}"
    async with _workers(redis_url, client_name=name) as (first, second):
        session_id = await _start(first)
        assert await second.get(session_id) is not None
        assert len(second.cache) == 1
        await _kill_pubsub(redis_url, name)
        await _silently_remove(first, session_id)  # ended while the second is deaf

        async def refused() -> bool:
            return await second.get(session_id) is None

        await eventually(refused)  # its cache clock is frozen: the flush did it, not the lifetime
        # Subscribed again: the cache is back in use (a session read now is kept).
        other = await _start(first, "bob")

        async def cached_again() -> bool:
            await second.get(other)
            return len(second.cache) == 1

        await eventually(cached_again, within=10.0)  # reconnecting backs off, from 50 ms
        assert await second.get(session_id) is None  # what was read before the drop stays flushed


async def test_a_read_overtaken_by_an_invalidation_is_not_kept(redis_url):
    async with _workers(redis_url) as (_, second):
        cache = second.cache
        ticket = cache.ticket()
        assert ticket is not None
        cache.forget("someone-else")  # any change announced while the read was under way
        cache.keep("abc", {"user": "alice"}, ticket)
        assert cache.lookup("abc") is None
        cache.keep("abc", {"user": "alice"}, cache.ticket())
        assert cache.lookup("abc") == {"user": "alice"}


async def test_memory_store_and_workers_that_do_not_listen_do_not_cache(redis_url):
    for store in (create_store("memory://"), RedisStore.from_url(redis_url, prefix=f"gwtest-{uuid.uuid4().hex[:12]}:")):
        policy = Policy()
        manager = SessionManager(store, KeyRing([("k1", os.urandom(32))]), lambda: policy)
        if not store.shared:
            await manager.listen()  # memory: one process, nothing to gain
        try:
            await manager.get(await _start(manager))
            assert len(manager.cache) == 0
        finally:
            await manager.stop_listening()
            await store.close()


# -- two gateways on one Redis ---------------------------------------------------------------


def _presenting(browser: Browser) -> str:
    return f'gw_session={browser.cookie("gw_session")}; gw_device={browser.cookie("gw_device")}'


async def _status(env: LoginEnv, cookie: str) -> int:
    async with aiohttp.ClientSession() as raw:
        async with raw.get(env.url + "/reservations", headers={"Cookie": cookie}, allow_redirects=False) as response:
            return response.status


async def _refused_everywhere(envs: list[LoginEnv], cookie: str) -> None:
    for env in envs:
        async def refused(env=env) -> bool:
            return await _status(env, cookie) != 200
        await eventually(refused)


@contextlib.asynccontextmanager
async def _two_gateways(tmp_path, redis_url: str, second_name: str | None = None):
    store_url = store_url_for("redis", redis_url)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(login_env(tmp_path, store_url))
        second_url = store_url + (f"&client_name={second_name}" if second_name else "")
        second = await stack.enter_async_context(login_env(tmp_path, second_url, pms_url=first.pms_url))
        yield first, second


async def _signed_in_on_both(first: LoginEnv, second: LoginEnv, browser: Browser) -> str:
    await browser.password("alice")
    await browser.enroll("alice")
    cookie = _presenting(browser)
    for env in (first, second):
        assert await _status(env, cookie) == 200
        assert len(env.sessions.cache) == 1  # each gateway now answers it from its cache
    return cookie


async def test_a_session_revoked_from_the_cli_is_refused_on_every_gateway_within_a_second(tmp_path, redis_url):
    async with _two_gateways(tmp_path, redis_url) as (first, second):
        browser = Browser(first)
        try:
            cookie = await _signed_in_on_both(first, second, browser)
            cli = create_store(first.config.store_url)  # what `sessions revoke` opens
            try:
                assert await end_user_sessions(cli, "alice", "revoked") == 1
            finally:
                await cli.close()
            await _refused_everywhere([first, second], cookie)
        finally:
            await browser.close()


async def test_a_session_revoked_from_the_console_is_refused_on_every_gateway_within_a_second(tmp_path, redis_url):
    async with _two_gateways(tmp_path, redis_url) as (first, second):
        browser = Browser(first)
        try:
            cookie = await _signed_in_on_both(first, second, browser)
            assert await second.sessions.end_user("alice", "revoked") == 1  # the console's call
            assert await _status(second, cookie) != 200  # where it was revoked: at once
            await _refused_everywhere([first], cookie)
        finally:
            await browser.close()


async def test_a_session_replaced_by_a_login_elsewhere_is_refused_on_every_gateway_within_a_second(
    tmp_path, redis_url
):
    async with _two_gateways(tmp_path, redis_url) as (first, second):
        browser, other_device = Browser(first), Browser(second)
        try:
            cookie = await _signed_in_on_both(first, second, browser)
            second.secrets.update(first.secrets)
            status, _, _ = await other_device.login("alice")  # max_devices: 1, on_new_device: replace
            assert status in (302, 303)
            assert await _status(second, _presenting(other_device)) == 200
            assert await _status(second, cookie) == 401  # where the new login ended it: at once
            await _refused_everywhere([first], cookie)
            assert await _status(first, cookie) == 401  # told it was replaced, not just asked to sign in
        finally:
            await browser.close()
            await other_device.close()


async def test_a_gateway_whose_pubsub_connection_drops_refuses_a_session_ended_meanwhile(tmp_path, redis_url):
    name = f"gwtest-{uuid.uuid4().hex[:12]}"
    async with _two_gateways(tmp_path, redis_url, second_name=name) as (first, second):
        browser = Browser(first)
        try:
            cookie = await _signed_in_on_both(first, second, browser)
            await _kill_pubsub(redis_url, name)
            # Ended with no announcement reaching the second gateway (it is disconnected).
            await first.services.store.delete("sess:" + token_hash(browser.cookie("gw_session")))
            await _refused_everywhere([second, first], cookie)
        finally:
            await browser.close()


async def test_the_feed_is_not_trusted_while_anything_waits_unread_on_its_socket():
    """SocketWatch: a message or the connection's end that reached the host but was not
    read yet makes the feed not quiet, before any task of the event loop has run."""
    from gateway.store.socket_watch import SocketWatch

    accepted: asyncio.Future = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    _, peer = await accepted
    watch = SocketWatch()
    try:
        assert watch.quiet(reader, writer)
        peer.write(b"*3\r\n")
        await peer.drain()

        async def not_quiet() -> bool:
            return not watch.quiet(reader, writer)

        await eventually(not_quiet)
        await reader.readexactly(4)
        assert watch.quiet(reader, writer)
        peer.transport.abort()
        await eventually(not_quiet)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_replaced_underneath_the_feed_counts_as_a_gap():
    """redis-py may reconnect a PubSub by itself: the watch notices the new transport."""
    from gateway.store.socket_watch import SocketWatch

    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    connections = [await asyncio.open_connection(*address) for _ in range(3)]
    replaced: list[bool] = []
    watch = SocketWatch(on_replaced=lambda: replaced.append(True))
    try:
        assert watch.quiet(*connections[0]) and replaced == []
        assert watch.quiet(*connections[0]) and replaced == []
        watch.quiet(*connections[1])
        assert replaced == [True]
        watch.close()  # the owner dropped the connection itself: no gap to report here
        watch.quiet(*connections[2])
        assert replaced == [True]
    finally:
        for _, writer in connections:
            writer.close()
        server.close()
