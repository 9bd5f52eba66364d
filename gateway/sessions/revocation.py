"""Ending every session of a user at once, from any process (CLI, another worker, host).

The session records are moved aside in the shared store, so the very next request of
that user on any gateway finds no session, even before any pub/sub message arrives. The
moved records still hold the PMS cookies: whichever gateway picks them up first (on the
broadcast, or in its periodic sweep) ends the PMS sessions behind them.
"""

from __future__ import annotations

import time

from gateway.sessions.model import EndedSession
from gateway.store.base import EphemeralStore

SESSION_ENDED_CHANNEL = "session-ended"
USER_REVOKED_CHANNEL = "user-revoked"
ENDED_MARKER_TTL = 86400.0
REVOKED_RECORD_TTL = 6 * 3600.0


async def end_user_sessions(store: EphemeralStore, name: str, reason: str = "deactivated") -> int:
    ended = 0
    for id_hash in await store.set_members("user-sess:" + name):
        sealed = await store.take("sess:" + id_hash)
        await store.set_remove("user-sess:" + name, id_hash)
        await store.set_remove("sess-all", id_hash)
        if sealed is None:
            continue
        await store.set("revoked-sess:" + id_hash, sealed, ttl=REVOKED_RECORD_TTL)
        await store.set_add("revoked-all", id_hash)
        marker = EndedSession(reason=reason, at=time.time(), user=name)
        await store.set("ended:" + id_hash, marker.to_json(), ttl=ENDED_MARKER_TTL)
        await store.publish(SESSION_ENDED_CHANNEL, id_hash.encode())
        ended += 1
    await store.publish(USER_REVOKED_CHANNEL, name.encode())
    return ended
