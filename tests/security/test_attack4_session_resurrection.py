"""Attack: bring an ended session back by finishing a request that started before the end.

A request loads its session, then waits on the PMS; meanwhile the user logs out in another
tab (or an operator revokes the user, or a login elsewhere replaces the session). When
the PMS's answer rotates a vaulted cookie, or the request records activity, the session
is written back. A plain write recreated the record: the "ended" session was live again,
outside the user's index, so `sessions revoke`, deactivation and the sweep could no
longer find it. An update now only replaces a record that still exists.
"""

from __future__ import annotations

import os
import uuid

from gateway.auth.keys import KeyRing
from gateway.policy.schema import Policy
from gateway.sessions.manager import TOUCH_GRANULARITY, SessionManager
from gateway.sessions.revocation import end_user_sessions
from gateway.store import create_store
from gateway.store.redis import RedisStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _manager(store, clock=None) -> SessionManager:
    policy = Policy()
    keyring = KeyRing([("k1", b"k" * 32)])
    return SessionManager(store, keyring, lambda: policy, **({"clock": clock} if clock else {}))


async def _start(manager: SessionManager, user: str = "alice") -> str:
    session_id, _ = await manager.create(
        user=user, group=None, device_id="dev-" + user, ip="192.0.2.1", user_agent="ua",
        login_type="password", vault={"PMSSESSID": "pms-" + user},
    )
    return session_id


async def test_a_vault_rotation_finishing_after_a_logout_on_another_worker_does_not_revive_it(redis_url):
    prefix = f"gwtest-{uuid.uuid4().hex[:12]}:"
    stores = [RedisStore.from_url(redis_url, prefix=prefix) for _ in range(2)]
    first, second = (_manager(store) for store in stores)
    await first.listen()
    await second.listen()
    try:
        session_id = await _start(first)
        in_flight = await second.get(session_id)  # the request on the second worker began
        assert await first.end(await first.get(session_id), "logout")
        in_flight.vault["PMSSESSID"] = "rotated-by-the-answer"
        assert await second.save(in_flight) is False
        assert await second.get(session_id) is None
        assert await first.get(session_id) is None
        assert await stores[0].get("sess:" + in_flight.id_hash) is None
    finally:
        for manager in (first, second):
            await manager.stop_listening()
            await manager.store.close()


async def test_activity_recorded_after_a_revocation_does_not_revive_the_session():
    clock = Clock()
    store = create_store("memory://")
    manager = _manager(store, clock)
    try:
        session_id = await _start(manager)
        in_flight = await manager.get(session_id)
        assert await end_user_sessions(store, "alice", "revoked") == 1  # the CLI or console
        clock.now += TOUCH_GRANULARITY + 1
        await manager.touch(in_flight, "/reservations")  # the request records its activity
        assert await manager.get(session_id) is None
        assert await manager.sessions_of("alice") == []
    finally:
        await store.close()
