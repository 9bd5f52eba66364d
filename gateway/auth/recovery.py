"""Recovery codes: ten one-time codes a user keeps on paper for the day the phone is lost.

Codes look like `k7wd-3mqp-x9fa`: 12 characters from a 31-letter alphabet without the
look-alikes 0/o and 1/l/i (about 59 random bits), typed case-insensitively, with or
without the dashes.

How they are stored: a keyed hash, HMAC-SHA256 under a subkey derived from the operator's
encryption key (`KeyRing.derive`), over the user id and the code; the stored text is
`hmac-sha256$<key id>$<hex>`. Why not scrypt/PBKDF2 with a salt: those slow hashes exist
to protect low-entropy passwords, and checking a typed code against ten slow hashes would
cost seconds of CPU per attempt, an easy denial of service. These codes are random and
long, and the key is not in the database, so a stolen database alone allows no offline
guessing at all. The user id in the message ties each hash to its owner; the key id keeps
old hashes checkable after `pms-gateway keys rotate` (old keys stay in the key file).

Enrollment invites (`gateway.auth.invites`) use the same code format and hashing.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth.keys import KeyRing, UnknownKeyError
from gateway.db import Database, recovery_codes

__all__ = ["ALPHABET", "CODE_COUNT", "canonical_code", "code_hash", "code_matches",
           "generate_recovery_codes", "random_code", "recovery_codes_left", "use_recovery_code"]

log = logging.getLogger(__name__)

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
CODE_COUNT = 10
_GROUPS, _GROUP_SIZE = 3, 4
_LENGTH = _GROUPS * _GROUP_SIZE
_SCHEME = "hmac-sha256"
RECOVERY_PURPOSE = "recovery-code"


def random_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(_LENGTH))
    return "-".join(raw[i:i + _GROUP_SIZE] for i in range(0, _LENGTH, _GROUP_SIZE))


def canonical_code(text: str) -> str | None:
    """The code as hashed (lower case, no dashes or spaces), or None when it cannot be
    one of ours (wrong length or letters): such input is refused before any hashing."""
    cleaned = "".join(text.split()).replace("-", "").lower()
    if len(cleaned) != _LENGTH or any(ch not in ALPHABET for ch in cleaned):
        return None
    return cleaned


def code_hash(keyring: KeyRing, purpose: str, user_id: int, canonical: str,
              key_id: str | None = None) -> str:
    kid = key_id or keyring.current_id
    digest = keyring.mac(purpose, f"{user_id}:{canonical}".encode(), kid).hex()
    return f"{_SCHEME}${kid}${digest}"


def code_matches(keyring: KeyRing, purpose: str, user_id: int, canonical: str, stored: str) -> bool:
    """Constant-time check of `canonical` against one stored hash."""
    scheme, _, rest = stored.partition("$")
    key_id, _, _digest = rest.partition("$")
    if scheme != _SCHEME or not key_id:
        return False
    try:
        expected = code_hash(keyring, purpose, user_id, canonical, key_id)
    except UnknownKeyError:
        log.warning("a stored code hash uses key %r, which the key ring lacks", key_id)
        return False
    return hmac.compare_digest(expected.encode(), stored.encode())


async def generate_recovery_codes(db: Database, keyring: KeyRing, user_id: int, *,
                                  now: datetime) -> list[str]:
    """Ten new codes for the user, replacing all earlier ones (used or not) in one
    transaction. The plain codes are returned once and never stored."""
    codes = [random_code() for _ in range(CODE_COUNT)]
    rows = [
        {"user_id": user_id, "code_hash": code_hash(keyring, RECOVERY_PURPOSE, user_id,
                                                    canonical_code(code) or ""),
         "created_at": now}
        for code in codes
    ]
    async with db.begin() as conn:
        await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        await conn.execute(insert(recovery_codes), rows)
    return codes


async def use_recovery_code(db: Database, keyring: KeyRing, user_id: int, code: str, *,
                            now: datetime) -> int | None:
    """Spend one code: the number of unused codes left, or None when the code is wrong or
    already used. Two simultaneous uses of one code: exactly one succeeds (the update
    only applies while `used_at` is still empty)."""
    canonical = canonical_code(code)
    if canonical is None:
        return None
    async with db.connect() as conn:
        candidates = (await conn.execute(
            select(recovery_codes.c.id, recovery_codes.c.code_hash)
            .where(recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
        )).all()
    found: int | None = None
    for row in candidates:  # check all, so timing does not tell which one matched
        if code_matches(keyring, RECOVERY_PURPOSE, user_id, canonical, row.code_hash) and found is None:
            found = row.id
    if found is None:
        return None
    async with db.begin() as conn:  # starts with the write: no SQLite lock upgrade
        spent = await conn.execute(
            update(recovery_codes)
            .where(recovery_codes.c.id == found, recovery_codes.c.used_at.is_(None))
            .values(used_at=now)
        )
        if spent.rowcount != 1:
            return None
        return await _left(conn, user_id)


async def recovery_codes_left(db: Database, user_id: int) -> int:
    async with db.connect() as conn:
        return await _left(conn, user_id)


async def _left(conn: AsyncConnection, user_id: int) -> int:
    result = await conn.execute(
        select(func.count()).select_from(recovery_codes)
        .where(recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
    )
    return int(result.scalar_one())
