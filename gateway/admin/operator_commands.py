"""`pms-gateway operators ...`: console operator accounts, made and rescued on the host.

Local commands, run as the gateway's OS user (they need its database and key file): the
very first operator can only be made here. Every change is recorded in the audit trail
under the OS user running the command (`gateway.cli_support.cli_actor`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli_support import ConfigOption, load_settings, run_command

if TYPE_CHECKING:
    from gateway.admin.operators import OperatorDirectory

operators_app = typer.Typer(no_args_is_help=True, help="Console operators: add, list, reset, remove.")
NameArgument = Annotated[str, typer.Argument(help="The operator's sign-in name.")]
PermissionsOption = Annotated[str, typer.Option(
    "--permissions", help="Comma-separated: view, manage_sessions, manage_users, forget_known_ip, support_access, "
    "console_admin (view is always included).")]


@asynccontextmanager
async def _directory(config_path: Path | None) -> AsyncIterator[tuple[OperatorDirectory, Any]]:
    from gateway.admin.operators import OperatorDirectory
    from gateway.audit.services import command_recorder
    from gateway.auth.keys import KeyRing
    from gateway.db import open_database
    from gateway.store import create_store

    config = load_settings(config_path)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env))
    database = await open_database(config.resolved_database_url)
    store = create_store(config.store_url)
    try:
        yield OperatorDirectory(database, keyring, store), command_recorder(config, database, "operator")
    finally:
        await store.close()
        await database.close()


def _run(coro: Any) -> Any:
    from gateway.admin.operators import OperatorRefused
    from gateway.auth.keys import KeyFileError

    return run_command(coro, OperatorRefused, KeyFileError)


def _stamp(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


@operators_app.command("add")
def operators_add(name: NameArgument, permissions: PermissionsOption = "view", config: ConfigOption = None) -> None:
    """Make an operator and print its one-time enrollment code (valid 24 hours): at the console's
    /enroll the operator chooses a password and sets up an authenticator app with it."""

    async def main() -> tuple[Any, str]:
        async with _directory(config) as (directory, record):
            operator, code = await directory.add(name, permissions)
            await record("operator_added", operator.name, permissions=list(operator.permissions))
            return operator, code

    operator, code = _run(main())
    typer.echo(f"operator {operator.name} ({', '.join(operator.permissions)})")
    typer.echo(f"enrollment code: {code}  (valid once, until {_stamp(operator.enroll_expires_at)})")
    typer.echo("open the console's /enroll page with it to choose a password and set up the authenticator")


@operators_app.command("list")
def operators_list(config: ConfigOption = None) -> None:
    """Every operator with its permissions and whether it has enrolled."""

    async def main() -> list[Any]:
        async with _directory(config) as (directory, _):
            return await directory.list()

    found = _run(main())
    if not found:
        typer.echo("no operators yet: pms-gateway operators add NAME --permissions view,console_admin")
    for o in found:
        state = "enrolled" if o.enrolled else f"enrollment pending until {_stamp(o.enroll_expires_at)}"
        typer.echo(f"{o.name}  {','.join(o.permissions)}  {state}")


@operators_app.command("permissions")
def operators_permissions(name: NameArgument, permissions: PermissionsOption, config: ConfigOption = None) -> None:
    """Replace an operator's permissions; its console sessions end."""

    async def main() -> Any:
        async with _directory(config) as (directory, record):
            operator = await directory.set_permissions(name, permissions)
            await record("operator_permissions", operator.name, permissions=list(operator.permissions))
            return operator

    operator = _run(main())
    typer.echo(f"operator {operator.name}: {', '.join(operator.permissions)}; its console sessions ended")


@operators_app.command("reset")
def operators_reset(
    name: NameArgument,
    unlock_only: Annotated[bool, typer.Option("--unlock-only", help="Only lift the lockout; keep password "
                                              "and authenticator.")] = False,
    config: ConfigOption = None,
) -> None:
    """Break-glass (local root): lift the operator's lockout and, unless --unlock-only, clear its
    password and authenticator and print a new enrollment code. Audited."""

    async def main() -> tuple[Any, str | None]:
        async with _directory(config) as (directory, record):
            operator, code = await directory.reset(name, factors=not unlock_only)
            await record("operator_reset", operator.name, factors_cleared=not unlock_only)
            return operator, code

    operator, code = _run(main())
    typer.echo(f"operator {operator.name}: lockout lifted; console sessions ended")
    if code is not None:
        typer.echo(f"new enrollment code: {code}  (valid once, until {_stamp(operator.enroll_expires_at)})")


@operators_app.command("remove")
def operators_remove(name: NameArgument, config: ConfigOption = None) -> None:
    """Delete an operator (never the last console_admin); its console sessions end."""

    async def main() -> None:
        async with _directory(config) as (directory, record):
            await directory.remove(name)
            await record("operator_removed", directory.normalise(name))

    _run(main())
    typer.echo(f"operator {name} removed")
