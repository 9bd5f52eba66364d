"""Console operators: accounts of their own, with one permission model.

An operator is made on the gateway host (`pms-gateway operators add NAME --permissions
...`, or by a `console_admin` on the console): that prints a one-time enrollment code
valid at most 24 hours. With it the operator chooses a password (argon2id, memory-hard)
and binds an authenticator app (the staff TOTP code paths of `gateway.auth.totp`, with
the same replay floor rule). Signing in then needs both, every time. Failures count in
the staff lockout rules (`gateway.risk.lockout`) under the subject `op:NAME`.

`generation` rises whenever an operator's permissions or factors change: a console
session remembers the generation it was opened under and ends when it no longer matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, or_, select, update

from gateway.auth.keys import KeyRing
from gateway.auth.recovery import canonical_code, code_hash, code_matches, random_code
from gateway.auth.totp import DIGITS, STEP_SECONDS, TotpResult, check_secret, matching_step, time_step
from gateway.db import Database
from gateway.db.tables import operators
from gateway.store.base import EphemeralStore

__all__ = ["PERMISSIONS", "Operator", "OperatorDirectory", "OperatorRefused", "parse_permissions"]

PERMISSIONS: tuple[str, ...] = (
    "view", "manage_sessions", "manage_users", "forget_known_ip", "support_access", "console_admin",
)
"""view: every screen; manage_sessions: revoke sessions; manage_users: invite, (de)activate,
reset 2FA, lift lockouts; forget_known_ip; support_access: grant/revoke vendor access;
console_admin: add and remove operators."""

ENROLL_PURPOSE = "operator-enrollment"
ENROLL_VALID_FOR = 24 * 3600.0
MIN_PASSWORD = 12
_hasher = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class OperatorRefused(ValueError):
    """An operator change that is not allowed (unknown permission, last console_admin, ...)."""


def parse_permissions(text: str | list[str]) -> tuple[str, ...]:
    """`view,manage_sessions` -> the permissions in canonical order; `view` is implied."""
    items = text.split(",") if isinstance(text, str) else text
    wanted = {item.strip() for item in items if item.strip()}
    unknown = sorted(wanted - set(PERMISSIONS))
    if unknown:
        raise OperatorRefused(f"unknown permission {', '.join(unknown)}; choose from {', '.join(PERMISSIONS)}")
    wanted.add("view")
    return tuple(p for p in PERMISSIONS if p in wanted)


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    name: str
    permissions: tuple[str, ...]
    enrolled: bool
    generation: int
    enroll_expires_at: datetime | None
    created_at: datetime

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def _normalise(name: str) -> str:
    cleaned = name.strip().lower()
    if not cleaned or len(cleaned) > 64 or not all(c.isalnum() or c in "-_." for c in cleaned):
        raise OperatorRefused("an operator name is 1-64 letters, digits, '-', '_' or '.'")
    return cleaned


def _aad(operator_id: int, name: str) -> bytes:
    return f"operator-totp:{operator_id}:{name}".encode()


class OperatorDirectory:
    def __init__(self, database: Database, keyring: KeyRing, store: EphemeralStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.keyring = keyring
        self.store = store
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    normalise = staticmethod(_normalise)

    @staticmethod
    def _operator(row) -> Operator:
        return Operator(row.id, row.name, tuple(p for p in row.permissions.split(",") if p),
                        row.password_hash is not None and row.totp_ciphertext is not None, row.generation,
                        row.enroll_expires_at, row.created_at)

    async def get(self, name: str) -> Operator | None:
        try:
            name = _normalise(name)
        except OperatorRefused:
            return None
        async with self.database.connect() as conn:
            row = (await conn.execute(select(operators).where(operators.c.name == name))).first()
        return self._operator(row) if row is not None else None

    async def list(self) -> list[Operator]:
        async with self.database.connect() as conn:
            rows = (await conn.execute(select(operators).order_by(operators.c.name))).all()
        return [self._operator(r) for r in rows]

    async def count(self) -> int:
        return len(await self.list())

    async def add(self, name: str, permissions: str | list[str]) -> tuple[Operator, str]:
        """A new operator and its one-time enrollment code (valid 24 h)."""
        name, granted = _normalise(name), parse_permissions(permissions)
        if await self.get(name) is not None:
            raise OperatorRefused(f"operator {name!r} exists; `operators reset {name}` issues a new code")
        now = self._now()
        async with self.database.begin() as conn:
            result = await conn.execute(insert(operators).values(
                name=name, permissions=",".join(granted), created_at=now, updated_at=now, generation=1,
                enroll_code_hash="pending", enroll_expires_at=now + timedelta(seconds=ENROLL_VALID_FOR)))
            operator_id = int(result.inserted_primary_key[0])
        code = await self._new_code(operator_id)
        operator = await self.get(name)
        assert operator is not None
        return operator, code

    async def _new_code(self, operator_id: int) -> str:
        code = random_code()
        now = self._now()
        async with self.database.begin() as conn:
            await conn.execute(update(operators).where(operators.c.id == operator_id).values(
                enroll_code_hash=code_hash(self.keyring, ENROLL_PURPOSE, operator_id, canonical_code(code) or ""),
                enroll_expires_at=now + timedelta(seconds=ENROLL_VALID_FOR), updated_at=now))
        return code

    async def reset(self, name: str, *, factors: bool = True) -> tuple[Operator, str | None]:
        """Break-glass: lift the lockout; with `factors`, clear password and authenticator and
        issue a new enrollment code. Every console session of the operator ends."""
        operator = await self._require(name)
        if self.store is not None:
            key = f"op:{operator.name}"
            await self.store.delete(f"lock:user:{key}", f"fail:user:{key}", f"wait:user:{key}")
        code = None
        async with self.database.begin() as conn:
            values: dict = {"generation": operators.c.generation + 1, "updated_at": self._now()}
            if factors:
                values.update(password_hash=None, totp_ciphertext=None, totp_key_id=None, totp_last_step=None)
            await conn.execute(update(operators).where(operators.c.id == operator.id).values(**values))
        if factors:
            code = await self._new_code(operator.id)
        return await self._require(name), code

    async def set_permissions(self, name: str, permissions: str | list[str]) -> Operator:
        operator = await self._require(name)
        granted = parse_permissions(permissions)
        if "console_admin" in operator.permissions and "console_admin" not in granted:
            await self._keep_an_admin(operator)
        async with self.database.begin() as conn:
            await conn.execute(update(operators).where(operators.c.id == operator.id).values(
                permissions=",".join(granted), generation=operators.c.generation + 1, updated_at=self._now()))
        return await self._require(name)

    async def remove(self, name: str) -> None:
        operator = await self._require(name)
        if "console_admin" in operator.permissions:
            await self._keep_an_admin(operator)
        async with self.database.begin() as conn:
            await conn.execute(delete(operators).where(operators.c.id == operator.id))

    async def _keep_an_admin(self, leaving: Operator) -> None:
        others = [o for o in await self.list() if o.can("console_admin") and o.id != leaving.id]
        if not others:
            raise OperatorRefused(f"{leaving.name!r} is the last console_admin; add another one first")

    async def _require(self, name: str) -> Operator:
        operator = await self.get(name)
        if operator is None:
            raise OperatorRefused(f"no operator {name!r}; see `pms-gateway operators list`")
        return operator

    # -- enrollment -------------------------------------------------------------------
    async def check_enrollment_code(self, name: str, code: str) -> Operator | None:
        """The operator when `code` is its unexpired enrollment code (not spent yet)."""
        operator, canonical = await self.get(name), canonical_code(code)
        if operator is None or canonical is None:
            return None
        async with self.database.connect() as conn:
            row = (await conn.execute(select(operators.c.enroll_code_hash, operators.c.enroll_expires_at)
                                      .where(operators.c.id == operator.id))).first()
        if row is None or row.enroll_code_hash is None or row.enroll_expires_at is None:
            return None
        if row.enroll_expires_at <= self._now():
            return None
        if not code_matches(self.keyring, ENROLL_PURPOSE, operator.id, canonical, row.enroll_code_hash):
            return None
        return operator

    @staticmethod
    def new_totp_secret() -> str:
        return pyotp.random_base32()

    @staticmethod
    def provisioning_uri(name: str, secret: str, issuer: str) -> str:
        return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=f"console:{name}", issuer_name=issuer)

    async def enroll(self, name: str, code: str, password: str, secret: str, totp_code: str) -> bool:
        """Spend the enrollment code: set the password and the authenticator, when the
        code is valid and `totp_code` proves the app was set up."""
        if len(password) < MIN_PASSWORD:
            raise OperatorRefused(f"a password has at least {MIN_PASSWORD} characters")
        operator = await self.check_enrollment_code(name, code)
        if operator is None:
            return False
        secret = check_secret(secret)
        step, _ = matching_step(secret, totp_code, self.clock())
        if step is None:
            return False
        ciphertext, key_id = self.keyring.encrypt(secret.encode(), _aad(operator.id, operator.name))
        async with self.database.begin() as conn:
            spent = await conn.execute(update(operators).where(
                operators.c.id == operator.id, operators.c.enroll_code_hash.is_not(None)).values(
                password_hash=_hasher.hash(password), totp_ciphertext=ciphertext, totp_key_id=key_id,
                totp_last_step=step, enroll_code_hash=None, enroll_expires_at=None,
                generation=operators.c.generation + 1, updated_at=self._now()))
        return spent.rowcount == 1

    # -- signing in -------------------------------------------------------------------
    async def verify_password(self, name: str, password: str) -> bool:
        """Argon2 verification; an unknown name costs the same time as a wrong password."""
        operator = await self.get(name)
        async with self.database.connect() as conn:
            stored = (await conn.execute(select(operators.c.password_hash).where(
                operators.c.id == (operator.id if operator else -1)))).scalar()
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    async def verify_totp(self, name: str, code: str) -> TotpResult:
        """Check a code; each time step counts once, never an earlier one (database floor,
        claimed atomically so two workers cannot both accept it)."""
        operator = await self.get(name)
        if operator is None:
            return TotpResult(False, "no_factor")
        async with self.database.connect() as conn:
            row = (await conn.execute(select(operators).where(operators.c.id == operator.id))).first()
        if row is None or row.totp_ciphertext is None:
            return TotpResult(False, "no_factor")
        secret = self.keyring.decrypt(row.totp_ciphertext, row.totp_key_id, _aad(row.id, row.name)).decode()
        now = self.clock()
        step, replayed = matching_step(secret, code, now, floor=row.totp_last_step)
        if step is None:
            return TotpResult(False, "replayed" if replayed else "invalid")
        async with self.database.begin() as conn:
            claimed = await conn.execute(update(operators).where(
                operators.c.id == row.id,
                or_(operators.c.totp_last_step.is_(None), operators.c.totp_last_step < step),
            ).values(totp_last_step=step))
        if claimed.rowcount != 1:
            return TotpResult(False, "replayed")
        return TotpResult(True, "ok", step - time_step(now))
