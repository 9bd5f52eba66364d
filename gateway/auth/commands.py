"""`pms-gateway users ...` and `pms-gateway keys ...`: the operator's account chores.

Each command opens the same database, key file and store the gateway uses (from
config.yaml and PMS_GATEWAY_* variables), does one thing and says what it did. A change to
an account (invite, deactivate, activate, reset-2fa) is recorded in the audit trail under
the OS user running the command, as the console records it under its operator. Run them as
the user the gateway runs as, so files they create (key file, SQLite database) stay
readable by the gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gateway.cli_support import ConfigOption, Refused, load_config_and_policy, run_command

if TYPE_CHECKING:
    from gateway.audit.services import CommandRecord
    from gateway.auth.users import UserDirectory, UserRecord
    from gateway.store import EphemeralStore

__all__ = ["keys_app", "users_app"]

T = TypeVar("T")

users_app = typer.Typer(no_args_is_help=True, help="Staff accounts: list, invite, deactivate, reset 2FA.")
keys_app = typer.Typer(no_args_is_help=True, help="Encryption keys of secrets at rest (TOTP seeds).")

NameArgument = Annotated[str, typer.Argument(help="Username, as typed at the PMS login.")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from cryptography.exceptions import InvalidTag

    from gateway.auth.keys import KeyFileError, UnknownKeyError
    from gateway.auth.users import UnknownUserError

    try:
        return run_command(coro, KeyFileError, UnknownKeyError, UnknownUserError)
    except InvalidTag:
        typer.echo("error: a stored secret does not decrypt with this key file "
                   "(wrong key file, or the data was altered)", err=True)
        raise typer.Exit(1) from None


@asynccontextmanager
async def _directory(
    config_path: Path | None,
) -> AsyncIterator[tuple[UserDirectory, EphemeralStore, CommandRecord]]:
    """The user directory, the session store, and `record(action, user, **extra)`."""
    from gateway.audit.services import command_recorder
    from gateway.auth.keys import KeyRing
    from gateway.auth.users import UserDirectory
    from gateway.db import open_database
    from gateway.store import create_store

    config, policy = load_config_and_policy(config_path)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env))
    database = await open_database(config.resolved_database_url)
    store = create_store(config.store_url)
    try:
        yield UserDirectory(database, keyring, lambda: policy, store), store, command_recorder(config, database, "user")
    finally:
        await store.close()
        await database.close()


def _factors(user: UserRecord) -> str:
    names = [n for n, has in (("totp", user.has_totp), ("security key", user.has_security_key)) if has]
    return ", ".join(names) or "none"


def _stamp(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


# -- users --------------------------------------------------------------------------
@users_app.command("list")
def users_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per user.")] = False,
) -> None:
    """Every user who has logged in or been invited: group, active flag, factors."""

    async def main() -> list[UserRecord]:
        async with _directory(config) as (directory, _store, _record):
            return await directory.list()

    records = _run(main())
    if as_json:
        for user in records:
            typer.echo(json.dumps({
                "name": user.name, "group": user.group, "active": user.active,
                "totp": user.has_totp, "security_key": user.has_security_key,
                "created_at": user.created_at.isoformat(),
                "deactivated_at": user.deactivated_at.isoformat() if user.deactivated_at else None,
            }))
        return
    if not records:
        typer.echo("no users yet: they appear at their first login or invite")
        return
    rows = [("NAME", "GROUP", "ACTIVE", "FACTORS", "SINCE")] + [
        (u.name, u.group or "(refused)", "yes" if u.active else f"no ({_stamp(u.deactivated_at)})",
         _factors(u), _stamp(u.created_at))
        for u in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@users_app.command("invite")
def users_invite(
    name: NameArgument,
    config: ConfigOption = None,
    create: Annotated[bool, typer.Option("--create", help="Create the account though no group lists the name "
                                         "(it joins the default group).")] = False,
) -> None:
    """Print a one-time code that lets NAME set up 2FA (enrollment: invite).

    A name no group lists and no account has is refused unless --create is given: a typo must not create an
    account."""

    async def main() -> tuple[UserRecord, Any]:
        async with _directory(config) as (directory, _store, record):
            group, matched = directory.membership(name)
            if group is None:
                raise Refused(f"{directory.normalise(name)!r} is in no group and the policy "
                              "refuses unknown usernames; add them to a group first")
            existing = await directory.get(name)
            if existing is None and matched == "default_group" and not create:
                raise Refused(f"{directory.normalise(name)!r} has no account and no group lists it; check the "
                              f"spelling, or run again with --create to make it an account of group {group}")
            if existing is not None and not existing.active:
                raise Refused(f"{existing.name!r} is deactivated; run `users activate` first")
            invite = await directory.issue_invite(name)
            user = await directory.ensure(name)
            await record("user_invited", user.name, expires_at=invite.expires_at.isoformat())
            return user, invite

    user, invite = _run(main())
    typer.echo(f"Invite for {user.name} (group {user.group}): {invite.code}")
    typer.echo(f"Valid until {_stamp(invite.expires_at)}, once. A newer invite replaces it.")
    if user.has_second_factor:
        typer.echo(f"Note: {user.name} already has 2FA ({_factors(user)}).")


@users_app.command("deactivate")
def users_deactivate(name: NameArgument, config: ConfigOption = None) -> None:
    """Refuse NAME's logins from now on and end their open sessions (leavers)."""

    async def main() -> tuple[UserRecord, Any, bool]:
        async with _directory(config) as (directory, store, record):
            user = await directory.set_active(name, False)
            from gateway.sessions.revocation import end_user_sessions

            ended = await end_user_sessions(store, user.name, reason="deactivated")
            await record("user_deactivated", user.name, ended=ended)
            from gateway.store import MemoryStore

            return user, ended, isinstance(store, MemoryStore)

    user, ended, memory = _run(main())
    typer.echo(f"deactivated {user.name}")
    if memory:
        typer.echo("sessions live in the running gateway's memory: it refuses this user's "
                   "next request, since it checks the active flag on every request")
    elif isinstance(ended, int):
        typer.echo(f"ended {ended} session(s)")


@users_app.command("activate")
def users_activate(name: NameArgument, config: ConfigOption = None) -> None:
    """Allow NAME to log in again."""

    async def main() -> UserRecord:
        async with _directory(config) as (directory, _store, record):
            user = await directory.set_active(name, True)
            await record("user_activated", user.name)
            return user

    user = _run(main())
    typer.echo(f"activated {user.name} (factors: {_factors(user)})")


@users_app.command("reset-2fa")
def users_reset_2fa(name: NameArgument, config: ConfigOption = None) -> None:
    """Delete NAME's authenticator, security keys and recovery codes (lost phone), and end
    their sessions: whoever holds the phone may also hold an open session."""

    async def main() -> tuple[UserRecord, int, str, int]:
        from gateway.sessions.revocation import end_user_sessions

        async with _directory(config) as (directory, store, record):
            removed = await directory.remove_factors(name)
            user = await directory.require(name)
            ended = await end_user_sessions(store, user.name, reason="revoked")
            await record("user_2fa_reset", user.name, removed=removed, ended=ended)
            return user, removed, directory.policy().enrollment_for(user.group), ended

    user, removed, enrollment, ended = _run(main())
    typer.echo(f"removed {removed} factor(s) and the recovery codes of {user.name}; ended {ended} session(s)")
    if enrollment == "invite":
        typer.echo(f"they need an invite to enroll again: pms-gateway users invite {user.name}")
    else:
        typer.echo(f"they enroll again at their next login (enrollment: {enrollment})")


# -- keys ---------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate(config: ConfigOption = None) -> None:
    """Add a new current key and re-encrypt every TOTP secret under it (one transaction).
    Older keys stay in the file: older data (and old audit-era records) may need them."""

    async def main() -> tuple[str, int, Path]:
        from gateway.auth.keys import KeyRing
        from gateway.auth.users import reencrypt_totp_secrets
        from gateway.config import load_config
        from gateway.db import open_database

        settings = load_config(config)
        keyring = KeyRing.load(settings.resolved_key_file, os.environ.get(settings.key_env))
        new_id = keyring.rotate(settings.resolved_key_file)  # file first: never data without key
        database = await open_database(settings.resolved_database_url)
        try:
            count = await reencrypt_totp_secrets(database, keyring)
        finally:
            await database.close()
        return new_id, count, settings.resolved_key_file

    new_id, count, path = _run(main())
    typer.echo(new_id)
    typer.echo(f"new current key {new_id} in {path}; re-encrypted {count} TOTP secret(s). "
               "Restart the gateway so it encrypts with the new key.", err=True)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """Key ids (never the keys), current first."""
    from gateway.auth.keys import KeyRing
    from gateway.config import load_config

    async def main() -> KeyRing:
        settings = load_config(config)
        return KeyRing.load(settings.resolved_key_file, os.environ.get(settings.key_env), create=False)

    keyring = _run(main())
    for key_id in keyring.key_ids:
        typer.echo(f"{key_id}{'  (current)' if key_id == keyring.current_id else ''}")
