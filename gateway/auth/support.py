"""Vendor support access: the PMS vendor's support staff sign in only with a temporary code.

The usernames under `support.accounts` in the policy are reserved for the vendor. Their
password alone never opens a session: after it, the 2FA page asks for an access code that
an IT operator issued on the console (permission `support_access`) or on the gateway host
with `pms-gateway support grant ACCOUNT --for 2h`. A code works once, until its
expiry (at most `support.max_duration`), and the session it opens ends at that expiry.
Codes are stored only as keyed hashes (the recovery-code format and hashing, see
`gateway.auth.recovery`). Grants and revocations go to the login history with login type
`support_access`, and the operator is alerted when alerts are configured.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from sqlalchemy import insert, select, update

from gateway.auth.recovery import canonical_code, code_hash, code_matches, random_code
from gateway.cli_support import ConfigOption, cli_actor, run_command
from gateway.db.tables import support_grants, users

if TYPE_CHECKING:
    from gateway.auth.keys import KeyRing
    from gateway.auth.users import UserDirectory
    from gateway.db import Database
    from gateway.policy.schema import Policy

__all__ = ["LOGIN_TYPE", "SupportAccess", "SupportGrant", "SupportRefused", "support_app"]

log = structlog.get_logger("gateway.auth.support")

LOGIN_TYPE = "support_access"
SUPPORT_PURPOSE = "support-access"


class SupportRefused(ValueError):
    """A grant the policy does not allow (not a support account, too long)."""


@dataclass(frozen=True, slots=True)
class SupportGrant:
    id: int
    account: str
    operator: str
    reason: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used" if self.expires_at > now else "used, expired"
        return "valid" if self.expires_at > now else "expired"


class SupportAccess:
    """Grants, redemption and revocation of support access codes."""

    def __init__(
        self,
        database: Database,
        keyring: KeyRing,
        policy: Callable[[], Policy],
        directory: UserDirectory,
        history: Any = None,  # LoginHistory: where grants and revocations are recorded
        alerter: Any = None,  # Alerter: the operator hears of grants, revocations and logins
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.keyring = keyring
        self.policy = policy
        self.directory = directory
        self.history = history
        self.alerter = alerter
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def is_support_account(self, name: str) -> bool:
        normalise = self.directory.normalise
        return normalise(name) in {normalise(a) for a in self.policy().support.accounts}

    async def grant(
        self, account: str, *, operator: str, valid_for: float, reason: str | None = None
    ) -> tuple[SupportGrant, str]:
        """A new one-time code for `account`; earlier unused codes of it are revoked."""
        account = self.directory.normalise(account)
        if not self.is_support_account(account):
            raise SupportRefused(f"{account!r} is not a support account; list it under support.accounts")
        longest = self.policy().support.max_duration
        if not 0 < valid_for <= longest:
            raise SupportRefused(f"--for must be positive and at most support.max_duration ({longest:g} s)")
        record = await self.directory.ensure(account)
        if not record.active:
            raise SupportRefused(f"{account!r} is deactivated; run `users activate` first")
        now = self._now()
        code = random_code()
        expires_at = now + timedelta(seconds=valid_for)
        reason = (reason or "").strip()[:200] or None
        async with self.database.begin() as conn:
            await conn.execute(
                update(support_grants)
                .where(support_grants.c.user_id == record.id, support_grants.c.used_at.is_(None),
                       support_grants.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            result = await conn.execute(insert(support_grants).values(
                user_id=record.id, code_hash=code_hash(self.keyring, SUPPORT_PURPOSE, record.id, canonical_code(code) or ""),
                operator=operator[:255], reason=reason, created_at=now, expires_at=expires_at,
            ))
            grant_id = int(result.inserted_primary_key[0])
        grant = SupportGrant(grant_id, account, operator, reason, now, expires_at, None, None)
        until = expires_at.strftime("%Y-%m-%d %H:%M UTC")
        await self._record(account, "support_granted",
                           f"granted by {operator} until {until}" + (f": {reason}" if reason else ""))
        await self.alert(f"Support access granted for {account} until {until}",
                         [f"Account: {account}", f"Granted by: {operator}", f"Valid until: {until}",
                          *([f"Reason: {reason}"] if reason else [])], account)
        return grant, code

    async def has_valid_grant(self, account: str) -> bool:
        now = self._now()
        async with self.database.connect() as conn:
            row = (await conn.execute(
                select(support_grants.c.id).join(users, users.c.id == support_grants.c.user_id)
                .where(users.c.name == self.directory.normalise(account), support_grants.c.used_at.is_(None),
                       support_grants.c.revoked_at.is_(None), support_grants.c.expires_at > now)
                .limit(1)
            )).first()
        return row is not None

    async def redeem(self, account: str, code: str) -> datetime | None:
        """The grant's expiry, once, for a valid, unexpired, unused code of `account`."""
        canonical = canonical_code(code)
        record = await self.directory.get(account)
        if canonical is None or record is None:
            return None
        now = self._now()
        async with self.database.connect() as conn:
            candidates = (await conn.execute(
                select(support_grants.c.id, support_grants.c.code_hash, support_grants.c.expires_at)
                .where(support_grants.c.user_id == record.id, support_grants.c.used_at.is_(None),
                       support_grants.c.revoked_at.is_(None), support_grants.c.expires_at > now)
            )).all()
        found = None
        for row in candidates:
            if code_matches(self.keyring, SUPPORT_PURPOSE, record.id, canonical, row.code_hash) and found is None:
                found = row
        if found is None:
            return None
        async with self.database.begin() as conn:
            spent = await conn.execute(
                update(support_grants)
                .where(support_grants.c.id == found.id, support_grants.c.used_at.is_(None),
                       support_grants.c.revoked_at.is_(None), support_grants.c.expires_at > now)
                .values(used_at=now)
            )
        if spent.rowcount != 1:
            return None
        expires_at = found.expires_at
        return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)

    async def revoke(self, account: str, *, operator: str) -> int:
        """Revoke every grant of `account` that is not yet expired; the caller ends its sessions."""
        account = self.directory.normalise(account)
        if not self.is_support_account(account):
            raise SupportRefused(f"{account!r} is not a support account; list it under support.accounts")
        record = await self.directory.get(account)
        revoked = 0
        now = self._now()
        if record is not None:
            async with self.database.begin() as conn:
                result = await conn.execute(
                    update(support_grants)
                    .where(support_grants.c.user_id == record.id, support_grants.c.revoked_at.is_(None),
                           support_grants.c.expires_at > now)
                    .values(revoked_at=now)
                )
                revoked = result.rowcount
        await self._record(account, "support_revoked", f"revoked by {operator}: {revoked} grant(s)")
        await self.alert(f"Support access revoked for {account}",
                         [f"Account: {account}", f"Revoked by: {operator}", f"Grants revoked: {revoked}"], account)
        return revoked

    async def list(self) -> list[SupportGrant]:
        async with self.database.connect() as conn:
            rows = (await conn.execute(
                select(support_grants, users.c.name).join(users, users.c.id == support_grants.c.user_id)
                .order_by(support_grants.c.created_at.desc(), support_grants.c.id.desc())
            )).all()
        return [SupportGrant(r.id, r.name, r.operator, r.reason, r.created_at, r.expires_at, r.used_at, r.revoked_at)
                for r in rows]

    async def _record(self, account: str, outcome: str, reason: str) -> None:
        if self.history is None:
            return
        from gateway.audit.logins import LoginAttempt

        await self.history.record(LoginAttempt(
            username=account, ip="operator", outcome=outcome, login_type=LOGIN_TYPE, reason=reason,  # type: ignore[arg-type]
        ))

    async def alert(self, subject: str, lines: list[str], account: str, ip: str | None = None) -> bool:
        """Tell the operator (e-mail and webhook from `alerts`/`smtp`) when `alerts.on` lists
        `support_access` (the default)."""
        alerter = self.alerter
        if alerter is None:
            return False
        from gateway.notify.events import Alert

        try:
            return await alerter.submit(Alert("support_access", subject, tuple(lines), account, ip,
                                              {"login_type": LOGIN_TYPE}))
        except Exception:
            log.exception("support access alert failed", user=account)
            return False


# -- pms-gateway support ... ----------------------------------------------------------------
support_app = typer.Typer(no_args_is_help=True, help="Vendor support access: temporary, audited access codes.")

AccountArgument = Annotated[str, typer.Argument(help="The support account (listed under support.accounts).")]
OperatorOption = Annotated[str | None, typer.Option("--operator", help="Only a label recorded beside the OS "
                                             "user running the command (who is recorded as the grantor).")]


@asynccontextmanager
async def open_support(config_path: Path | None) -> AsyncIterator[tuple[SupportAccess, Any]]:
    """The support service on the gateway's own database, key file and store."""
    from gateway.audit.logins import LoginHistory
    from gateway.audit.services import build_alerter
    from gateway.auth.keys import KeyRing
    from gateway.auth.users import UserDirectory
    from gateway.cli_support import load_config_and_policy
    from gateway.db import open_database
    from gateway.store import create_store

    config, policy = load_config_and_policy(config_path)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env))
    database = await open_database(config.resolved_database_url)
    store = create_store(config.store_url)
    alerter = build_alerter(config, lambda: policy)  # type: ignore[arg-type]
    directory = UserDirectory(database, keyring, lambda: policy, store)
    history = LoginHistory(database, None, lambda: policy)
    try:
        yield SupportAccess(database, keyring, lambda: policy, directory, history, alerter), store
    finally:
        await alerter.close()
        await store.close()
        await database.close()


def _run(coro: Any) -> Any:
    from gateway.auth.keys import KeyFileError, UnknownKeyError

    return run_command(coro, KeyFileError, UnknownKeyError)


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


@support_app.command("grant")
def support_grant(
    account: AccountArgument,
    valid_for: Annotated[str, typer.Option("--for", help="How long the code is valid, e.g. 2h (at most "
                                           "support.max_duration); the support session ends then too.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded), e.g. a ticket number.")] = None,
    operator: OperatorOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a one-time access code that lets the vendor's support sign in as ACCOUNT."""
    from gateway.policy.durations import parse_duration

    async def main() -> tuple[SupportGrant, str]:
        seconds = parse_duration(valid_for)
        async with open_support(config) as (support, _store):
            return await support.grant(account, operator=cli_actor(operator), valid_for=seconds, reason=reason)

    grant, code = _run(main())
    typer.echo(f"Support access code for {grant.account}: {code}")
    typer.echo(f"Valid once, until {_stamp(grant.expires_at)}; the session it opens ends then. "
               "A newer code replaces it.")


@support_app.command("list")
def support_list(config: ConfigOption = None) -> None:
    """Every support access grant, newest first, with its state."""

    async def main() -> tuple[list[SupportGrant], datetime]:
        async with open_support(config) as (support, _store):
            return await support.list(), support._now()

    grants, now = _run(main())
    if not grants:
        typer.echo("no support access granted yet")
        return
    rows = [("ACCOUNT", "STATE", "GRANTED BY", "GRANTED", "EXPIRES", "USED", "REASON")] + [
        (g.account, g.state(now), g.operator, _stamp(g.created_at), _stamp(g.expires_at), _stamp(g.used_at),
         g.reason or "-")
        for g in grants
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@support_app.command("revoke")
def support_revoke(account: AccountArgument, operator: OperatorOption = None, config: ConfigOption = None) -> None:
    """Revoke ACCOUNT's access codes and end its open sessions (and the PMS sessions behind them)."""

    async def main() -> tuple[int, int]:
        from gateway.sessions.revocation import end_user_sessions

        async with open_support(config) as (support, store):
            revoked = await support.revoke(account, operator=cli_actor(operator))
            ended = await end_user_sessions(store, support.directory.normalise(account), reason="revoked")
            return revoked, ended

    revoked, ended = _run(main())
    typer.echo(f"revoked {revoked} grant(s) of {account}; ended {ended} session(s)")
