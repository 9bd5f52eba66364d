"""The user directory: who the staff are, in which group, with which second factors.

Users are created on their first login (the PMS remains the authority on passwords); the
gateway keeps only what 2FA needs: the normalised name, an active flag, encrypted TOTP
secrets, security keys, recovery-code hashes and enrollment invites. Group membership is
not stored: it is computed from the policy on every call, so editing the policy is enough
to move someone.

One `UserDirectory` per process; several processes share the database and, for the TOTP
replay floor, the ephemeral store.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from sqlalchemy import Row, Select, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from gateway.auth import invites as _invites
from gateway.auth import recovery as _recovery
from gateway.auth.invites import Invite
from gateway.auth.keys import KeyRing
from gateway.auth.totp import DIGITS, STEP_SECONDS, TotpResult, check_secret, matching_step, time_step
from gateway.db import Database, recovery_codes, totp_factors, users, webauthn_credentials
from gateway.db.engine import _SQLITE_BEGIN
from gateway.policy.schema import Policy
from gateway.store import EphemeralStore

__all__ = ["Invite", "SecurityKey", "TotpResult", "UnknownUserError", "UserDirectory", "UserRecord",
           "reencrypt_totp_secrets", "totp_associated_data"]

MAX_NAME_LENGTH = 255  # users.name
FLOOR_TTL = 86400.0
"""The store's copy of the replay floor may expire: after a few steps the window has moved
past it anyway, and the database keeps the authoritative copy."""


class UnknownUserError(LookupError):
    """No user of that name has logged in yet (or ever existed)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    active: bool
    group: str | None
    has_totp: bool
    has_security_key: bool
    created_at: datetime
    deactivated_at: datetime | None

    @property
    def has_second_factor(self) -> bool:
        return self.has_totp or self.has_security_key


@dataclass(frozen=True, slots=True)
class SecurityKey:
    """A registered WebAuthn credential (public key only: the private key never leaves it)."""

    id: int
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    label: str | None
    created_at: datetime
    last_used_at: datetime | None


def totp_associated_data(user_id: int, name: str) -> bytes:
    """Binds a TOTP ciphertext to its row's owner: copied to another user, it fails."""
    return f"totp:{user_id}:{name}".encode()


def _floor_key(user_id: int) -> str:
    return f"totp:floor:{user_id}"


_HAS_TOTP = exists().where(totp_factors.c.user_id == users.c.id).label("has_totp")
_HAS_KEY = exists().where(webauthn_credentials.c.user_id == users.c.id).label("has_security_key")
_USER_SELECT: Select = select(users, _HAS_TOTP, _HAS_KEY)


@dataclass(frozen=True, slots=True)
class _Membership:
    """The policy's group lists, compiled once per policy object."""

    policy: Policy
    groups: list[tuple[str, frozenset[str], list[re.Pattern[str]]]]


class UserDirectory:
    """Users, their group and their second factors. `policy` is called on every use so a
    reloaded policy applies at once; `clock` (seconds since the epoch) is injectable so
    tests move time instead of sleeping."""

    def __init__(
        self,
        database: Database,
        keyring: KeyRing,
        policy: Callable[[], Policy],
        store: EphemeralStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.keyring = keyring
        self.policy = policy
        self.store = store
        self.clock = clock
        self._membership: _Membership | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- names and groups ------------------------------------------------------------
    def normalise(self, raw: str) -> str:
        """The one spelling a username is stored and compared under: NFKC (so full-width
        and compatibility characters collapse onto their plain form), then trimmed and
        case-folded as the policy says. Empty names and names with control, format
        (zero-width) or line-separator characters are refused with ValueError: they are
        how look-alike accounts are made."""
        rules = self.policy().login.usernames
        name = unicodedata.normalize("NFKC", raw)
        if rules.trim:
            name = name.strip()
        if rules.casefold:
            name = unicodedata.normalize("NFKC", name.casefold())
        if not name:
            raise ValueError("the username is empty")
        if any(unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
               for ch in name):
            raise ValueError("the username contains control or invisible characters")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"the username is longer than {MAX_NAME_LENGTH} characters")
        return name

    def _compiled(self) -> _Membership:
        policy = self.policy()
        if self._membership is not None and self._membership.policy is policy:
            return self._membership
        flags = re.IGNORECASE if policy.login.usernames.casefold else 0
        groups = []
        for group, rules in policy.groups.items():
            names: set[str] = set()
            patterns: list[re.Pattern[str]] = []
            for member in rules.members:
                if member.startswith("re:"):
                    try:
                        patterns.append(re.compile(member[3:], flags))
                    except re.error:
                        continue  # a broken pattern matches nobody (fails closed)
                else:
                    try:
                        names.add(self.normalise(member))
                    except ValueError:
                        continue
            groups.append((group, frozenset(names), patterns))
        self._membership = _Membership(policy, groups)
        return self._membership

    def group_of(self, name: str) -> str | None:
        """The first group (in policy order) listing the name or matching one of its
        `re:` patterns (searched, so anchor them: `re:^frontdesk-`); else the
        default group when `login.usernames.unknown` is `default_group`; else None, and
        the caller refuses the login."""
        return self.membership(name)[0]

    def membership(self, name: str) -> tuple[str | None, str]:
        """`group_of` with the reason: the member entry that matched (the name, or
        `re:PATTERN`), `default_group`, or `unknown` (`pms-gateway policy explain` shows it)."""
        name = self.normalise(name)
        membership = self._compiled()
        for group, names, patterns in membership.groups:
            if name in names:
                return group, name
            for pattern in patterns:
                if pattern.search(name):
                    return group, "re:" + pattern.pattern
        policy = membership.policy
        if policy.login.usernames.unknown == "default_group" and policy.default_group is not None:
            return policy.default_group, "default_group"
        return None, "unknown"

    # -- users -----------------------------------------------------------------------
    def _record(self, row: Row) -> UserRecord:
        return UserRecord(
            id=row.id, name=row.name, active=bool(row.active), group=self.group_of(row.name),
            has_totp=bool(row.has_totp), has_security_key=bool(row.has_security_key),
            created_at=row.created_at, deactivated_at=row.deactivated_at,
        )

    async def get(self, name: str) -> UserRecord | None:
        name = self.normalise(name)
        async with self.database.connect() as conn:
            row = (await conn.execute(_USER_SELECT.where(users.c.name == name))).first()
        return None if row is None else self._record(row)

    async def require(self, name: str) -> UserRecord:
        record = await self.get(name)
        if record is None:
            raise UnknownUserError(f"no user {self.normalise(name)!r}")
        return record

    async def ensure(self, name: str) -> UserRecord:
        """The user, created (active) if this is their first login. Whether they may log
        in at all (`group_of` is None, inactive) is the caller's decision."""
        name = self.normalise(name)
        now = self._now()
        dialect = postgresql if self.database.dialect == "postgresql" else sqlite
        statement = (
            dialect.insert(users)
            .values(name=name, active=True, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[users.c.name])
        )
        async with self.database.begin() as conn:
            await conn.execute(statement)
            row = (await conn.execute(_USER_SELECT.where(users.c.name == name))).one()
        return self._record(row)

    async def list(self) -> list[UserRecord]:
        async with self.database.connect() as conn:
            rows = (await conn.execute(_USER_SELECT.order_by(users.c.name))).all()
        return [self._record(row) for row in rows]

    async def set_active(self, name: str, active: bool) -> UserRecord:
        """Activate or deactivate; UnknownUserError when the user never logged in. Ending
        the sessions of a deactivated user is the caller's job (see `users deactivate`)."""
        name = self.normalise(name)
        now = self._now()
        async with self.database.begin() as conn:
            await conn.execute(
                update(users).where(users.c.name == name, users.c.active.is_not(active))
                .values(active=active, deactivated_at=None if active else now, updated_at=now)
            )
        return await self.require(name)

    # -- TOTP ------------------------------------------------------------------------
    @staticmethod
    def new_totp_secret() -> str:
        """160 random bits, base32 (what authenticator apps expect)."""
        return pyotp.random_base32()

    def provisioning_uri(self, name: str, secret: str) -> str:
        """The otpauth:// URI the QR code carries; the issuer is the property's name."""
        return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=self.normalise(name), issuer_name=self.policy().property,
        )

    @staticmethod
    def qr_svg(uri: str) -> str:
        """The QR code as an inline <svg> element (no external image, no script)."""
        import segno

        return segno.make(uri, error="m", micro=False).svg_inline(
            scale=5, border=2, title="Scan with your authenticator app",
        )

    async def enroll_totp(self, name: str, secret: str, code: str) -> bool:
        """Save `secret` as the user's authenticator, replacing any earlier one, but only
        when `code` proves the app was set up correctly (False otherwise, or when the user
        is deactivated). The enrollment code's step becomes the replay floor, so it cannot
        be used again for the login that follows. Whether the user may enroll (invite,
        network) is the caller's decision."""
        secret = check_secret(secret)
        now = self.clock()
        step, _ = matching_step(secret, code, now)
        if step is None:
            return False
        user = await self.ensure(name)
        if not user.active:
            return False
        ciphertext, key_id = self.keyring.encrypt(
            secret.encode(), totp_associated_data(user.id, user.name)
        )
        stamp = self._now()
        async with self.database.begin() as conn:
            await conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user.id))
            await conn.execute(totp_factors.insert().values(
                user_id=user.id, secret_ciphertext=ciphertext, key_id=key_id, created_at=stamp,
                last_used_at=stamp, last_step=step, last_step_offset=step - time_step(now),
            ))
        await self.store.raise_to(_floor_key(user.id), step, ttl=FLOOR_TTL)
        return True

    async def verify_totp(self, name: str, code: str) -> TotpResult:
        """Check a login code. A time step is accepted at most once per user, and never a
        step at or before the last accepted one, across every worker: the store's atomic
        `raise_to` decides races between workers; the database keeps the floor across
        restarts of a memory store. Whether the user is active is the caller's check."""
        name = self.normalise(name)
        async with self.database.connect() as conn:
            row = (await conn.execute(
                select(users.c.id, users.c.name, totp_factors.c.id.label("factor_id"),
                       totp_factors.c.secret_ciphertext, totp_factors.c.key_id,
                       totp_factors.c.last_step)
                .join(totp_factors, totp_factors.c.user_id == users.c.id)
                .where(users.c.name == name)
                .order_by(totp_factors.c.id.desc())
                .limit(1)
            )).first()
        if row is None:
            return TotpResult(False, "no_factor", None)
        secret = self.keyring.decrypt(
            row.secret_ciphertext, row.key_id, totp_associated_data(row.id, row.name)
        ).decode()
        key = _floor_key(row.id)
        stored = await self.store.get(key)
        floors = [f for f in (row.last_step, int(stored) if stored else None) if f is not None]
        now = self.clock()
        step, replayed = matching_step(secret, code, now, floor=max(floors) if floors else None)
        if step is None:
            return TotpResult(False, "replayed" if replayed else "invalid", None)
        offset = step - time_step(now)
        if not await self.store.raise_to(key, step, ttl=FLOOR_TTL):
            return TotpResult(False, "replayed", offset)
        async with self.database.begin() as conn:
            claimed = await conn.execute(
                update(totp_factors)
                .where(totp_factors.c.id == row.factor_id,
                       or_(totp_factors.c.last_step.is_(None), totp_factors.c.last_step < step))
                .values(last_step=step, last_step_offset=offset, last_used_at=self._now())
            )
        if claimed.rowcount != 1:
            return TotpResult(False, "replayed", offset)
        return TotpResult(True, "ok", offset)

    # -- security keys (WebAuthn) -----------------------------------------------------
    async def security_keys(self, name: str) -> list[SecurityKey]:
        """The user's registered security keys, oldest first ([] for an unknown user)."""
        name = self.normalise(name)
        async with self.database.connect() as conn:
            rows = (await conn.execute(
                select(webauthn_credentials)
                .join(users, users.c.id == webauthn_credentials.c.user_id)
                .where(users.c.name == name)
                .order_by(webauthn_credentials.c.id)
            )).all()
        return [SecurityKey(
            id=row.id, credential_id=bytes(row.credential_id), public_key=bytes(row.public_key),
            sign_count=int(row.sign_count), transports=tuple(t for t in (row.transports or "").split(",") if t),
            label=row.label, created_at=row.created_at, last_used_at=row.last_used_at,
        ) for row in rows]

    async def add_security_key(
        self, name: str, *, credential_id: bytes, public_key: bytes, sign_count: int,
        transports: tuple[str, ...] | list[str] = (), label: str | None = None,
    ) -> SecurityKey | None:
        """Save a verified credential for the user. None when the user is deactivated or the
        credential is already registered (to anyone). Whether the user proved a current
        second factor (or is enrolling their first) is the caller's check."""
        user = await self.ensure(name)
        if not user.active:
            return None
        stamp = self._now()
        try:
            async with self.database.begin() as conn:
                await conn.execute(webauthn_credentials.insert().values(
                    user_id=user.id, credential_id=credential_id, public_key=public_key,
                    sign_count=sign_count, transports=",".join(transports)[:255],
                    label=(label or None) and label[:255], created_at=stamp,
                ))
        except IntegrityError:
            return None
        return next((k for k in await self.security_keys(name) if k.credential_id == credential_id), None)

    async def remove_security_key(self, name: str, key_id: int) -> bool:
        """Delete one of the user's keys by its row id; False when it is not theirs."""
        user = await self.get(name)
        if user is None:
            return False
        async with self.database.begin() as conn:
            removed = await conn.execute(delete(webauthn_credentials).where(
                webauthn_credentials.c.id == key_id, webauthn_credentials.c.user_id == user.id))
        return removed.rowcount == 1

    async def update_sign_count(self, name: str, credential_id: bytes, expected: int, new: int) -> bool:
        """Record a successful use: the signature counter moves from `expected` to `new`.
        Compare-and-set, so of two workers accepting the same counter value only one
        wins (False for the other, and for a key that is not the user's)."""
        user = await self.get(name)
        if user is None:
            return False
        async with self.database.begin() as conn:
            claimed = await conn.execute(
                update(webauthn_credentials)
                .where(webauthn_credentials.c.user_id == user.id,
                       webauthn_credentials.c.credential_id == credential_id,
                       webauthn_credentials.c.sign_count == expected)
                .values(sign_count=new, last_used_at=self._now())
            )
        return claimed.rowcount == 1

    async def remove_factors(self, name: str) -> int:
        """Reset 2FA: delete the user's authenticator, security keys and recovery codes,
        so the next login must enroll again (with a new invite when the policy says so).
        Returns how many factors (authenticators + security keys) were removed."""
        user = await self.require(name)
        async with self.database.begin() as conn:
            removed = (await conn.execute(
                delete(totp_factors).where(totp_factors.c.user_id == user.id))).rowcount
            removed += (await conn.execute(
                delete(webauthn_credentials).where(webauthn_credentials.c.user_id == user.id))).rowcount
            await conn.execute(
                delete(recovery_codes).where(recovery_codes.c.user_id == user.id))
        return removed

    async def has_second_factor(self, name: str) -> bool:
        """An authenticator or a security key (recovery codes alone do not count)."""
        user = await self.get(name)
        return user is not None and user.has_second_factor

    # -- recovery codes and invites --------------------------------------------------
    async def generate_recovery_codes(self, name: str) -> list[str]:
        """Ten fresh codes, replacing the user's earlier ones. Shown to the user once."""
        user = await self.ensure(name)
        return await _recovery.generate_recovery_codes(
            self.database, self.keyring, user.id, now=self._now())

    async def use_recovery_code(self, name: str, code: str) -> int | None:
        """Codes left after spending this one, or None (wrong, used, unknown user)."""
        user = await self.get(name)
        if user is None:
            return None
        return await _recovery.use_recovery_code(
            self.database, self.keyring, user.id, code, now=self._now())

    async def recovery_codes_left(self, name: str) -> int:
        user = await self.get(name)
        return 0 if user is None else await _recovery.recovery_codes_left(self.database, user.id)

    async def issue_invite(self, name: str) -> Invite:
        """A new enrollment invite (code and expiry), replacing unused earlier ones. The
        user row is created if needed, so operators can invite before the first login."""
        user = await self.ensure(name)
        return await _invites.create_invite(
            self.database, self.keyring, user.id,
            valid_for=self.policy().second_factor.invite_valid_for, now=self._now(),
        )

    async def create_invite(self, name: str) -> str:
        return (await self.issue_invite(name)).code

    async def redeem_invite(self, name: str, code: str) -> bool:
        """True once for this user's valid, unexpired invite; False for anything else,
        including a deactivated user."""
        user = await self.get(name)
        if user is None or not user.active:
            return False
        return await _invites.redeem_invite(
            self.database, self.keyring, user.id, code, now=self._now())


async def reencrypt_totp_secrets(database: Database, keyring: KeyRing) -> int:
    """Re-encrypt every TOTP secret not yet under the key ring's current key, in one
    transaction (all or nothing). Returns how many were re-encrypted."""
    async with database.engine.connect() as conn:
        await conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})  # write lock first
        async with conn.begin():
            rows = (await conn.execute(
                select(totp_factors.c.id, totp_factors.c.secret_ciphertext, totp_factors.c.key_id,
                       users.c.id.label("user_id"), users.c.name)
                .join(users, users.c.id == totp_factors.c.user_id)
                .where(totp_factors.c.key_id != keyring.current_id)
                .with_for_update(of=totp_factors)
            )).all()
            for row in rows:
                aad = totp_associated_data(row.user_id, row.name)
                secret = keyring.decrypt(row.secret_ciphertext, row.key_id, aad)
                ciphertext, key_id = keyring.encrypt(secret, aad)
                await conn.execute(
                    update(totp_factors).where(totp_factors.c.id == row.id)
                    .values(secret_ciphertext=ciphertext, key_id=key_id)
                )
    return len(rows)
