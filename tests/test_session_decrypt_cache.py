"""The per-worker cache of decrypted sessions (SessionManager.load) changes no answer.

Two managers on one Redis are two workers. Each request still reads the record, so a
session revoked, ended or changed on one worker is seen by the next request on the other
at once; only an unchanged record is not decrypted again.
"""

from __future__ import annotations

import os

from gateway.auth.keys import KeyRing
from gateway.policy.schema import Policy
from gateway.sessions.manager import SessionManager
from gateway.sessions.revocation import end_user_sessions
from gateway.store.redis import RedisStore


async def _workers(redis_url: str) -> tuple[RedisStore, SessionManager, SessionManager]:
    store = RedisStore.from_url(redis_url, prefix=f"gwtest-{os.urandom(6).hex()}:")
    keyring = KeyRing([("k1", os.urandom(32))])
    policy = Policy()
    return store, SessionManager(store, keyring, lambda: policy), SessionManager(store, keyring, lambda: policy)


async def _start(manager: SessionManager, user: str = "alice") -> str:
    session_id, _ = await manager.create(
        user=user, group=None, device_id="dev-" + user, ip="192.0.2.1", user_agent="ua",
        login_type="password", vault={"PMSSESSID": "pms-" + user},
    )
    return session_id


async def test_revoked_and_ended_sessions_are_refused_at_once_on_the_other_worker(redis_url):
    store, first, second = await _workers(redis_url)
    try:
        alice, bob = await _start(first, "alice"), await _start(first, "bob")
        assert (await second.get(alice)).user == "alice"  # cached on the second worker now
        assert (await second.get(bob)).user == "bob"
        assert await end_user_sessions(store, "alice") == 1  # revoked from elsewhere (CLI, console)
        assert await second.get(alice) is None
        assert await first.end(await first.get(bob), "logout")
        assert await second.get(bob) is None
    finally:
        await store.close()


async def test_a_change_on_one_worker_is_read_by_the_next_request_on_the_other(redis_url):
    store, first, second = await _workers(redis_url)
    try:
        session_id = await _start(first)
        seen = await second.get(session_id)
        seen.vault["PMSSESSID"] = "changed in memory only"  # never leaks into the next read
        assert (await second.get(session_id)).vault == {"PMSSESSID": "pms-alice"}
        updated = await first.get(session_id)
        updated.vault = {"PMSSESSID": "rotated-by-pms"}
        await first.save(updated)
        assert (await second.get(session_id)).vault == {"PMSSESSID": "rotated-by-pms"}
    finally:
        await store.close()


async def test_a_record_copied_under_another_session_is_still_refused(redis_url):
    """The cache is keyed by session: a record moved to another key fails its binding."""
    store, first, second = await _workers(redis_url)
    try:
        alice, bob = await _start(first, "alice"), await _start(first, "bob")
        await second.get(alice)
        bob_session = await second.get(bob)
        await store.set("sess:" + bob_session.id_hash, await store.get("sess:" + (await second.get(alice)).id_hash))
        assert await second.get(bob) is None
    finally:
        await store.close()
