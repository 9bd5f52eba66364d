"""A login between the PMS accepting the password and the user passing the second factor.

The PMS's answer is withheld here: its session cookies (vaulted), its redirect and the
other cookies it set. The browser holds only an opaque token for this record; nothing
about the PMS session reaches it until the second factor is passed.
"""

from __future__ import annotations

import json
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
    attempts: int = 0
    enroll_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    login_type: str = "password+totp"
    remember: bool = False


class PendingLogins:
    def __init__(self, store: EphemeralStore, cipher: Cipher) -> None:
        self.records = SealedRecords(store, cipher, "pending:")

    async def create(self, pending: PendingLogin, ttl: float) -> str:
        token = new_token()
        await self.records.put(token_hash(token), json.dumps(asdict(pending)).encode(), ttl=ttl)
        return token

    async def get(self, token: str) -> PendingLogin | None:
        data = await self.records.get(token_hash(token))
        return PendingLogin(**json.loads(data)) if data is not None else None

    async def save(self, token: str, pending: PendingLogin, ttl: float) -> None:
        await self.records.put(token_hash(token), json.dumps(asdict(pending)).encode(), ttl=ttl)

    async def take(self, token: str) -> PendingLogin | None:
        """Remove and return: a pending login completes or is abandoned exactly once."""
        data = await self.records.take(token_hash(token))
        return PendingLogin(**json.loads(data)) if data is not None else None
