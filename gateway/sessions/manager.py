"""Device sessions in the ephemeral store: creation under the one-device rule, expiry, ending.

Records are encrypted in the store (they hold the PMS's session cookies) under the
operator's key, bound to the session's hash. A session that ends leaves a short-lived
marker saying why, so the browser that held it can be told ("signed in elsewhere at
14:02 from 203.0.113.9") instead of silently landing on a login form. Ending a session
always ends the PMS session behind it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
import structlog

from gateway.policy.schema import Policy
from gateway.sessions.cache import SESSION_CHANGED_CHANNEL, SessionCache
from gateway.sessions.model import DeviceSession, EndedSession, LogoutSubject, new_token, token_hash
from gateway.sessions.revocation import ENDED_MARKER_TTL, SESSION_ENDED_CHANNEL, end_user_sessions
from gateway.sessions.sealed import Cipher, SealedRecords, unseal
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.sessions")

TOUCH_GRANULARITY = 5.0  # seconds: activity is written at most this often per session
OPENED_RECORDS = 4096  # sessions whose decrypted fields this worker keeps (see `load`)

UpstreamLogout = Callable[[dict[str, str]], Awaitable[None]]


class TooManyDevices(Exception):
    """`on_new_device: refuse` and the user is already signed in on max_devices devices."""


class SessionManager:
    def __init__(
        self,
        store: EphemeralStore,
        cipher: Cipher,
        policy: Callable[[], Policy],
        upstream_logout: UpstreamLogout | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.records = SealedRecords(store, cipher, "sess:")
        self.policy = policy
        self.upstream_logout = upstream_logout
        self.clock = clock
        self._background: set[asyncio.Task] = set()
        # id_hash -> (sealed record as last read, its decrypted fields): an unchanged
        # record read again skips AES-GCM and JSON.
        self._opened: dict[str, tuple[bytes, dict]] = {}
        # Skips the read itself, while every change is announced to it (see cache.py);
        # inactive until `listen()` (the session guard's startup).
        self.cache = SessionCache()

    async def listen(self) -> None:
        """Cache sessions between requests, invalidated by the store's broadcast."""
        await self.cache.start(self.store)

    async def stop_listening(self) -> None:
        await self.cache.stop()

    # -- storage -------------------------------------------------------------------------

    async def save(self, session: DeviceSession, *, new: bool = False) -> bool:
        """Write the session; False when it ended meanwhile. Only `create` writes a `new`
        record: an update (activity, a rotated PMS cookie) of a session another request or
        worker has just ended must not bring it back, outside the user's index where no
        revocation or sweep would find it."""
        rules = self.policy().sessions_for(session.group)
        ttl = max(1.0, session.deadline(rules.max_lifetime) - self.clock())
        if new:
            await self.records.put(session.id_hash, session.to_json(), ttl=ttl)
            saved = True
        else:
            saved = await self.records.replace(session.id_hash, session.to_json(), ttl=ttl)
        self.cache.forget(session.id_hash)  # after the write: a read from now on sees it
        if saved:
            await self.store.publish(SESSION_CHANGED_CHANNEL, session.id_hash.encode())
        return saved

    async def load(self, id_hash: str) -> DeviceSession | None:
        """The session as stored (see cache.py for how recent), decrypted once per version.

        A cached copy that looks expired is not trusted with that verdict: the store's
        record decides (another worker may have recorded activity a moment ago)."""
        fields = self.cache.lookup(id_hash)
        if fields is not None:
            session = DeviceSession.from_fields(fields)
            if self.expiry_reason(session) is None:
                return session
        ticket = self.cache.ticket()
        key = self.records.prefix + id_hash
        sealed = await self.store.get(key)
        if sealed is None:
            self._opened.pop(id_hash, None)
            return None
        opened = self._opened.get(id_hash)
        if opened is None or opened[0] != sealed:
            data = unseal(self.cipher, key, sealed)
            if data is None:
                return None
            opened = (sealed, json.loads(data))
            self._opened.pop(id_hash, None)
            if len(self._opened) >= OPENED_RECORDS:
                del self._opened[next(iter(self._opened))]  # the oldest
            self._opened[id_hash] = opened
        self.cache.keep(id_hash, opened[1], ticket)
        return DeviceSession.from_fields(opened[1])

    async def get(self, session_id: str) -> DeviceSession | None:
        return await self.load(token_hash(session_id))

    async def ended(self, session_id: str) -> EndedSession | None:
        data = await self.store.get("ended:" + token_hash(session_id))
        return EndedSession.from_json(data) if data else None

    async def sessions_of(self, user: str) -> list[DeviceSession]:
        sessions = []
        for id_hash in await self.store.set_members("user-sess:" + user):
            session = await self.load(id_hash)
            if session is None:
                await self.store.set_remove("user-sess:" + user, id_hash)
            else:
                sessions.append(session)
        return sorted(sessions, key=lambda s: s.created)

    # -- lifecycle -----------------------------------------------------------------------

    async def create(
        self,
        *,
        user: str,
        group: str | None,
        device_id: str,
        ip: str,
        user_agent: str,
        login_type: str,
        vault: dict[str, str],
        expires_at: float | None = None,
    ) -> tuple[str, DeviceSession]:
        """A fresh session (never a reused id: no fixation), applying the device rule.
        `expires_at` (epoch seconds) ends it earlier than the group's max_lifetime."""
        rules = self.policy().sessions_for(group)
        existing = await self.sessions_of(user)
        same_device = [s for s in existing if s.device_id == device_id]
        others = [s for s in existing if s.device_id != device_id]
        excess = len(others) + 1 - rules.max_devices
        if excess > 0 and rules.on_new_device == "refuse":
            raise TooManyDevices(f"{user} is signed in on {len(others)} other device(s)")
        for old in same_device:
            await self.end(old, "relogin")
        for old in others[: max(0, excess)]:
            await self.end(old, "replaced", by_ip=ip)
        now = self.clock()
        session_id = new_token()
        session = DeviceSession(
            id_hash=token_hash(session_id),
            user=user,
            group=group,
            device_id=device_id,
            created=now,
            last_active=now,
            ip=ip,
            user_agent=user_agent[:300],
            login_type=login_type,
            vault=dict(vault),
            expires_at=expires_at,
        )
        await self.save(session, new=True)
        await self.store.set_add("user-sess:" + user, session.id_hash, ttl=rules.max_lifetime)
        await self.store.set_add("sess-all", session.id_hash)
        log.info("session started", user=user, session_hash=session.id_hash[:16], login_type=login_type)
        return session_id, session

    def expiry_reason(self, session: DeviceSession) -> str | None:
        rules = self.policy().sessions_for(session.group)
        now = self.clock()
        if now >= session.deadline(rules.max_lifetime):
            return "expired"
        if now - session.last_active >= rules.idle_timeout:
            return "idle"
        return None

    async def touch(self, session: DeviceSession, path: str) -> None:
        """Record activity, unless `path` is polling that must not keep a session alive."""
        if self.policy().sessions_for(session.group).ignores_activity(path):
            return
        now = self.clock()
        if now - session.last_active >= TOUCH_GRANULARITY:
            session.last_active = now
            await self.save(session)

    async def end(
        self, session: DeviceSession, reason: str, *, by_ip: str | None = None, upstream_logout: bool = True
    ) -> bool:
        """End a session once (whoever gets there first across workers does the work)."""
        if not await self.store.set_if_absent("ending:" + session.id_hash, b"1", ttl=60):
            self.cache.forget(session.id_hash)  # another worker is ending it right now
            return False
        await self.store.delete("sess:" + session.id_hash)
        self._opened.pop(session.id_hash, None)
        self.cache.forget(session.id_hash)
        await self.store.set_remove("user-sess:" + session.user, session.id_hash)
        await self.store.set_remove("sess-all", session.id_hash)
        marker = EndedSession(reason=reason, at=self.clock(), by_ip=by_ip, user=session.user)
        await self.store.set("ended:" + session.id_hash, marker.to_json(), ttl=ENDED_MARKER_TTL)
        await self.store.publish(SESSION_ENDED_CHANNEL, session.id_hash.encode())
        log.info("session ended", user=session.user, session_hash=session.id_hash[:16], reason=reason)
        if upstream_logout and session.vault and self.upstream_logout is not None:
            self._spawn(self.upstream_logout(session.vault, LogoutSubject.of(session, reason)))
        return True

    def end_upstream(self, vault: dict[str, str], subject: LogoutSubject | None = None) -> None:
        """End, in the background, a PMS session no gateway session holds any more."""
        if vault and self.upstream_logout is not None:
            self._spawn(self.upstream_logout(vault, subject))

    async def end_user(self, user: str, reason: str) -> int:
        ended = await end_user_sessions(self.store, user, reason)
        self.cache.forget_all()  # here at once, without waiting for the broadcast
        await self.finish_revoked()
        return ended

    async def finish_revoked(self) -> int:
        """End the PMS sessions behind sessions revoked from elsewhere (see revocation.py)."""
        finished = 0
        for id_hash in await self.store.set_members("revoked-all"):
            sealed = await self.store.take("revoked-sess:" + id_hash)
            await self.store.set_remove("revoked-all", id_hash)
            # Sealed under its original key name ("sess:<hash>"): moving it changes nothing.
            data = unseal(self.cipher, "sess:" + id_hash, sealed) if sealed is not None else None
            session = DeviceSession.from_json(data) if data is not None else None
            if session is not None and session.vault and self.upstream_logout is not None:
                self._spawn(self.upstream_logout(session.vault, LogoutSubject.of(session, "revoked")))
                finished += 1
        return finished

    async def sweep(self) -> int:
        """End sessions that expired without another request (their PMS sessions too)."""
        ended = await self.finish_revoked()
        for id_hash in await self.store.set_members("sess-all"):
            session = await self.load(id_hash)
            if session is None:
                await self.store.set_remove("sess-all", id_hash)
                continue
            reason = self.expiry_reason(session)
            if reason is not None:
                ended += await self.end(session, reason)
        return ended

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for pending upstream logouts (shutdown and tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
