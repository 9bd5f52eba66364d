"""Enrollment invites: a one-time code an operator hands a user so they may set up 2FA.

With `second_factor.enrollment: invite`, knowing a user's PMS password is not enough to
bind an attacker's phone to the account: the first enrollment also needs this code, given
out of band (in person, by phone). Codes use the recovery-code format and keyed hashing
(see `gateway.auth.recovery`); the hash covers the user id, so a code only works for the
user it was issued to. A new invite replaces that user's earlier unused ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from gateway.auth.keys import KeyRing
from gateway.auth.recovery import canonical_code, code_hash, code_matches, random_code
from gateway.db import Database, enrollment_invites

__all__ = ["INVITE_PURPOSE", "Invite", "create_invite", "redeem_invite"]

INVITE_PURPOSE = "enrollment-invite"


@dataclass(frozen=True, slots=True)
class Invite:
    code: str
    expires_at: datetime


async def create_invite(db: Database, keyring: KeyRing, user_id: int, *, valid_for: float,
                        now: datetime) -> Invite:
    """A fresh code valid for `valid_for` seconds; earlier unused invites are dropped."""
    code = random_code()
    expires_at = now + timedelta(seconds=valid_for)
    hashed = code_hash(keyring, INVITE_PURPOSE, user_id, canonical_code(code) or "")
    async with db.begin() as conn:
        await conn.execute(
            delete(enrollment_invites)
            .where(enrollment_invites.c.user_id == user_id, enrollment_invites.c.used_at.is_(None))
        )
        await conn.execute(insert(enrollment_invites).values(
            user_id=user_id, code_hash=hashed, created_at=now, expires_at=expires_at,
        ))
    return Invite(code, expires_at)


async def redeem_invite(db: Database, keyring: KeyRing, user_id: int, code: str, *,
                        now: datetime) -> bool:
    """True once for a valid, unexpired code of this user; every later try is False."""
    canonical = canonical_code(code)
    if canonical is None:
        return False
    async with db.connect() as conn:
        candidates = (await conn.execute(
            select(enrollment_invites.c.id, enrollment_invites.c.code_hash)
            .where(enrollment_invites.c.user_id == user_id,
                   enrollment_invites.c.used_at.is_(None),
                   enrollment_invites.c.expires_at > now)
        )).all()
    found: int | None = None
    for row in candidates:
        if code_matches(keyring, INVITE_PURPOSE, user_id, canonical, row.code_hash) and found is None:
            found = row.id
    if found is None:
        return False
    async with db.begin() as conn:
        spent = await conn.execute(
            update(enrollment_invites)
            .where(enrollment_invites.c.id == found,
                   enrollment_invites.c.used_at.is_(None),
                   enrollment_invites.c.expires_at > now)
            .values(used_at=now)
        )
        return spent.rowcount == 1
