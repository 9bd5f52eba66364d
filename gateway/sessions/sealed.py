"""Records kept encrypted in the ephemeral store.

Sessions and pending logins hold the PMS's session cookies; a Redis dump or a shared
Redis must not hand them out. Each record is sealed with the operator's key and bound to
its own key name, so records cannot be swapped either.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.sessions")


class Cipher(Protocol):
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[bytes, str]: ...
    def decrypt(self, ciphertext: bytes, key_id: str, associated_data: bytes) -> bytes: ...


def seal(cipher: Cipher, key: str, plaintext: bytes) -> bytes:
    ciphertext, key_id = cipher.encrypt(plaintext, key.encode())
    return key_id.encode() + b"\0" + ciphertext


def unseal(cipher: Cipher, key: str, sealed: bytes) -> bytes | None:
    key_id, _, ciphertext = sealed.partition(b"\0")
    try:
        return cipher.decrypt(ciphertext, key_id.decode(), key.encode())
    except Exception:
        log.warning("unreadable sealed record ignored", key=key.split(":")[0])
        return None


class SealedRecords:
    def __init__(self, store: EphemeralStore, cipher: Cipher, prefix: str) -> None:
        self.store, self.cipher, self.prefix = store, cipher, prefix

    async def put(self, id_hash: str, plaintext: bytes, ttl: float) -> None:
        key = self.prefix + id_hash
        await self.store.set(key, seal(self.cipher, key, plaintext), ttl=ttl)

    async def replace(self, id_hash: str, plaintext: bytes, ttl: float) -> bool:
        """Update a record only while it exists (see EphemeralStore.replace)."""
        key = self.prefix + id_hash
        return await self.store.replace(key, seal(self.cipher, key, plaintext), ttl=ttl)

    async def get(self, id_hash: str) -> bytes | None:
        key = self.prefix + id_hash
        sealed = await self.store.get(key)
        return unseal(self.cipher, key, sealed) if sealed is not None else None

    async def take(self, id_hash: str) -> bytes | None:
        key = self.prefix + id_hash
        sealed = await self.store.take(key)
        return unseal(self.cipher, key, sealed) if sealed is not None else None

    async def delete(self, id_hash: str) -> None:
        await self.store.delete(self.prefix + id_hash)
