"""A fresh second factor before changing what protects an account (the account page).

A session left open on a front-desk PC must not be enough to enroll an attacker's
security key or authenticator app, or to print new recovery codes. So every such change
on /_gateway/account asks for a current second factor first: a TOTP code or an assertion
of one of the user's security keys (a recovery code is not one: it is what the change may
replace). A proof grants a step-up bound to the device session (its hash), valid
`STEP_UP_SECONDS`: time enough to scan a QR code or touch a new key. The change it allows
spends it (one proof, one change), so a second change asks again.

Wrong proofs are limited twice: `PROOF_FAILURES` per session and quarter hour (then every
proof is refused until the window passes) and each counts toward the user's lockout, as a
wrong code at login does; a locked user or address is refused before any check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.auth.security_keys import CeremonyError, SecurityKeys
from gateway.risk.lockout import Lockouts
from gateway.sessions.model import DeviceSession
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.auth.account")

STEP_UP_SECONDS = 5 * 60.0
PROOF_FAILURES = 5
PROOF_WINDOW = 15 * 60.0
_GRANT = "account:step-up:"
_FAILURES = "account:proof-failures:"


@dataclass(frozen=True, slots=True)
class Proof:
    """What the browser sent as a second factor: a TOTP code or a key assertion."""

    code: str | None = None
    assertion: dict | None = None

    @classmethod
    def read(cls, code: object = None, assertion: object = None) -> Proof:
        text = "".join(code.split()) if isinstance(code, str) else ""
        return cls(text or None, assertion if isinstance(assertion, dict) else None)

    @property
    def given(self) -> bool:
        return self.code is not None or self.assertion is not None


class AccountStepUp:
    """Step-ups of device sessions on the account page: proved, checked, spent."""

    def __init__(
        self, users, keys: SecurityKeys, store: EphemeralStore, lockouts: Lockouts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = users
        self.keys = keys
        self.store = store
        self.lockouts = lockouts
        self.clock = clock

    async def require(self, session: DeviceSession, proof: Proof, *, ip: str, origin: str) -> str | None:
        """None when this session may make a change now (the proof is right, or an earlier
        one is still fresh); else why not, as a message key: `proof_required`,
        `security_key_wait`, `too_many_attempts`, `code_invalid`, `code_replayed`,
        `security_key_invalid`, `security_key_expired`."""
        if not proof.given:
            return None if await self.fresh(session) else "proof_required"
        failures = await self.store.get(_FAILURES + session.id_hash)
        if failures is not None and int(failures) >= PROOF_FAILURES:
            return "security_key_wait"
        if await self.lockouts.current(session.user, ip) is not None:
            return "too_many_attempts"
        error = await self._check(session, proof, origin)
        if error is None:
            await self.store.set(_GRANT + session.id_hash, str(self.clock() + STEP_UP_SECONDS).encode(),
                                 ttl=STEP_UP_SECONDS)
            return None
        if error != "security_key_expired":  # a lapsed ceremony is no guess
            await self.store.incr(_FAILURES + session.id_hash, ttl=PROOF_WINDOW)
            await self.lockouts.record_failure(session.user, ip)
        log.warning("account change refused", user=session.user, ip=ip, reason=error)
        return error

    async def fresh(self, session: DeviceSession) -> bool:
        granted = await self.store.get(_GRANT + session.id_hash)
        return granted is not None and self.clock() < float(granted)

    async def spend(self, session: DeviceSession) -> None:
        """The change was made: the next one asks for a second factor again."""
        await self.store.delete(_GRANT + session.id_hash)

    async def _check(self, session: DeviceSession, proof: Proof, origin: str) -> str | None:
        if proof.assertion is not None:
            try:
                await self.keys.authenticate(session.user, proof.assertion, purpose="confirm",
                                             binding=session.id_hash, origin=origin)
            except CeremonyError as exc:
                return "security_key_expired" if exc.reason == "no_challenge" else "security_key_invalid"
            return None
        result = await self.users.verify_totp(session.user, proof.code or "")
        if result.ok:
            return None
        return "code_replayed" if result.reason == "replayed" else "code_invalid"
