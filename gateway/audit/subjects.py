"""Per-subject data keys: erasure without breaking the chain.

A subject is a person the trail talks about: a signed-in user (`user:NAME`) or, for
requests before sign-in, the client address (`ip:ADDR`). Each has a random AES-256 key;
a record's personal fields (user name, client IP, business identifiers) are stored as
AES-GCM ciphertext under its subject's key and the chain MAC covers that ciphertext.
Destroying the key (`pms-gateway audit erase`) makes those fields unreadable for good
("[erased]") while every MAC still verifies.

Data keys are wrapped with a key derived from the operator's audit key, so a copy of the
database alone reveals nothing. The table is found by a keyed hash of the subject name,
never the name itself, and the hash is cleared on erasure so the link is gone too.
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from functools import lru_cache
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.keys import AuditKeys
from gateway.audit.sql import insert_or_ignore
from gateway.db import subject_keys, utcnow

ERASED = "[erased]"
UNREADABLE = "[unreadable]"
_PREFIX = "v1."
CACHE_SECONDS = 60.0
"""A key erased by another process stops being used here within this time."""


def is_ciphertext(value: str | None) -> bool:
    return value is not None and value.startswith(_PREFIX)


@dataclass(frozen=True, slots=True)
class SubjectCipher:
    subject_id: str
    aead: AESGCM

    def encrypt(self, field: str, text: str) -> str:
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, text.encode(), self._aad(field))
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def decrypt(self, field: str, token: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(token.removeprefix(_PREFIX) + "==")
            return self.aead.decrypt(raw[:12], raw[12:], self._aad(field)).decode()
        except (InvalidTag, ValueError):
            return UNREADABLE

    def _aad(self, field: str) -> bytes:
        # Bound to subject and column: a ciphertext moved elsewhere does not decrypt.
        return f"{self.subject_id}:{field}".encode()


@lru_cache(maxsize=4096)
def _lookup(key: bytes, kind: str, value: str) -> str:
    return hmac.digest(key, f"{kind}:{value}".encode(), "sha256").hex()


class SubjectKeys:
    def __init__(self, keys: AuditKeys) -> None:
        self._keys = keys
        self._wrapper = AESGCM(keys.wrap)
        self._by_lookup: dict[str, tuple[SubjectCipher, float]] = {}
        self._by_id: dict[str, SubjectCipher | None] = {}

    def lookup(self, kind: str, value: str) -> str:
        """Keyed hash naming the subject in subject_keys (never the name itself)."""
        return _lookup(self._keys.index, kind, value)

    # -- writing ---------------------------------------------------------------------------
    async def ciphers_for(
        self, conn: AsyncConnection, lookups: Iterable[str]
    ) -> tuple[dict[str, SubjectCipher], dict[str, SubjectCipher]]:
        """Ciphers for these subjects, creating keys as needed: (all, fetched or created).
        Call `remember(fetched)` only after the transaction committed."""
        now = time.monotonic()
        found: dict[str, SubjectCipher] = {}
        missing: list[str] = []
        for lookup in set(lookups):
            cached = self._by_lookup.get(lookup)
            if cached is not None and cached[1] > now:
                found[lookup] = cached[0]
            else:
                missing.append(lookup)
        fetched: dict[str, SubjectCipher] = {}
        if missing:
            fetched = await self._fetch(conn, missing)
            absent = [lookup for lookup in missing if lookup not in fetched]
            if absent:
                rows = []
                for lookup in absent:
                    subject_id, key = os.urandom(16).hex(), AESGCM.generate_key(256)
                    rows.append({"id": subject_id, "lookup": lookup, "wrapped_key": self._wrap(subject_id, key),
                                 "created_at": utcnow()})
                await conn.execute(insert_or_ignore(conn.dialect.name, subject_keys, ["lookup"]), rows)
                fetched.update(await self._fetch(conn, absent))  # ours, or a racing instance's
            found.update(fetched)
        return found, fetched

    def remember(self, ciphers: dict[str, SubjectCipher]) -> None:
        expires = time.monotonic() + CACHE_SECONDS
        for lookup, cipher in ciphers.items():
            self._by_lookup[lookup] = (cipher, expires)
            self._by_id[cipher.subject_id] = cipher

    async def _fetch(self, conn: AsyncConnection, lookups: list[str]) -> dict[str, SubjectCipher]:
        result = await conn.execute(
            select(subject_keys.c.id, subject_keys.c.lookup, subject_keys.c.wrapped_key).where(
                subject_keys.c.lookup.in_(lookups), subject_keys.c.wrapped_key.is_not(None)
            )
        )
        return {row.lookup: SubjectCipher(row.id, AESGCM(self._unwrap(row.id, row.wrapped_key))) for row in result}

    def _wrap(self, subject_id: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrapper.encrypt(nonce, key, subject_id.encode())

    def _unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return self._wrapper.decrypt(wrapped[:12], wrapped[12:], subject_id.encode())

    # -- reading ---------------------------------------------------------------------------
    async def cipher_by_id(self, conn: AsyncConnection, subject_id: str) -> SubjectCipher | None:
        """The subject's cipher, or None when its key was erased (or never existed)."""
        if subject_id in self._by_id:
            return self._by_id[subject_id]
        row = (
            await conn.execute(
                select(subject_keys.c.wrapped_key).where(subject_keys.c.id == subject_id)
            )
        ).first()
        cipher = None
        if row is not None and row.wrapped_key is not None:
            try:
                cipher = SubjectCipher(subject_id, AESGCM(self._unwrap(subject_id, row.wrapped_key)))
            except InvalidTag:
                cipher = None  # wrapped by another audit key
        self._by_id[subject_id] = cipher
        return cipher

    async def subject_id(self, conn: AsyncConnection, kind: str, value: str) -> str | None:
        row = (
            await conn.execute(select(subject_keys.c.id).where(subject_keys.c.lookup == self.lookup(kind, value)))
        ).first()
        return None if row is None else row.id

    # -- erasure ---------------------------------------------------------------------------
    async def erase(self, conn: AsyncConnection, kind: str, value: str) -> str | None:
        """Destroy the subject's key; returns its id (what records refer to), or None."""
        subject_id = await self.subject_id(conn, kind, value)
        if subject_id is None:
            return None
        await conn.execute(
            update(subject_keys)
            .where(subject_keys.c.id == subject_id)
            .values(wrapped_key=None, lookup=None, erased_at=utcnow())
        )
        self._by_id[subject_id] = None
        self._by_lookup.pop(self.lookup(kind, value), None)
        return subject_id
