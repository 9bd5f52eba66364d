"""A login between the PMS accepting the password and the user passing the second factor.

The PMS's answer is withheld here: its session cookies (vaulted), its redirect and the
other cookies it set. The browser holds only an opaque token for this record; nothing
about the PMS session reaches it until the second factor is passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gateway.sessions.model import new_token, token_hash
from gateway.sessions.sealed import Cipher, SealedRecords
from gateway.store.base import EphemeralStore


@dataclass
class PendingLogin:
    user: str
    group: str | None
    ip: str
    device_id: str
    user_agent: str
    created: float
    vault: dict[str, str]
    status: int
    location: str | None
    set_cookies: list[str]
    json: bool
    stage: str  # verify | invite | enroll | recovery_codes
    attempts: int = 0  # codes claimed so far: read from the store's counter, never written from here
    enroll_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    login_type: str = "password+totp"
    remember: bool = False
    has_totp: bool = True  # offer the code field; a user with only a security key is not asked for one
    step_up: str | None = None  # a step-up of a live session (auth/step_up.py): its held request's token, no new session


# Records outlive their deadline by this much so the sweeper can still read the vault of
# an abandoned login and end the PMS session behind it.
SWEEP_GRACE = 3600.0


def _attempts_key(id_hash: str) -> str:
    return f"pending-attempts:{id_hash}"


class PendingLogins:
    """Pending logins by token; expiry is judged by `clock`, not only by store TTLs."""

    def __init__(
        self, store: EphemeralStore, cipher: Cipher, timeout: Callable[[], float], clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.records = SealedRecords(store, cipher, "pending:")
        self.timeout = timeout
        self.clock = clock

    def _expired(self, pending: PendingLogin) -> bool:
        return self.clock() >= pending.created + self.timeout()

    async def create(self, pending: PendingLogin) -> str:
        token = new_token()
        await self.save(token, pending)
        await self.store.set_add("pending-all", token_hash(token))
        return token

    async def get(self, token: str) -> PendingLogin | None:
        id_hash = token_hash(token)
        data = await self.records.get(id_hash)
        pending = PendingLogin(**json.loads(data)) if data is not None else None
        if pending is None or self._expired(pending):
            return None
        claimed = await self.store.get(_attempts_key(id_hash))
        pending.attempts = int(claimed) if claimed else 0
        return pending

    async def claim_attempt(self, token: str, pending: PendingLogin) -> int:
        """Claim one code attempt: the number of attempts claimed including this one.

        One atomic increment in the store, so parallel requests on any worker each get a
        distinct number, and a caller evaluates a code only when its number is within the
        limit. The counter is separate from the record and is not deleted when the login
        ends (it expires with the record): a request still in flight then claims past the
        limit instead of starting again at 1."""
        return await self.store.incr(_attempts_key(token_hash(token)), ttl=self._ttl(pending))

    async def refund_attempt(self, token: str, pending: PendingLogin) -> None:
        """Give back a claimed attempt whose code was never evaluated (an expired security
        key challenge, say). Safe: a later claim still sees every evaluated attempt."""
        await self.store.incr(_attempts_key(token_hash(token)), -1, ttl=self._ttl(pending))

    def _ttl(self, pending: PendingLogin) -> float:
        return max(1.0, pending.created + self.timeout() - self.clock()) + SWEEP_GRACE

    async def save(self, token: str, pending: PendingLogin) -> None:
        await self.records.put(token_hash(token), json.dumps(asdict(pending)).encode(), ttl=self._ttl(pending))

    async def take(self, token: str) -> PendingLogin | None:
        """Remove and return: a pending login completes or is abandoned exactly once."""
        id_hash = token_hash(token)
        data = await self.records.take(id_hash)
        await self.store.set_remove("pending-all", id_hash)
        pending = PendingLogin(**json.loads(data)) if data is not None else None
        return None if pending is None or self._expired(pending) else pending

    async def take_abandoned(self) -> list[PendingLogin]:
        """Pending logins past their deadline, removed so exactly one caller handles each."""
        abandoned = []
        for id_hash in await self.store.set_members("pending-all"):
            data = await self.records.get(id_hash)
            if data is None:
                await self.store.set_remove("pending-all", id_hash)
                continue
            pending = PendingLogin(**json.loads(data))
            if self._expired(pending) and await self.records.take(id_hash) is not None:
                await self.store.set_remove("pending-all", id_hash)
                abandoned.append(pending)
        return abandoned
