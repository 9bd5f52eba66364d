"""`pms-gateway api-clients ...`: tokens for the integrations declared under `api_clients:`.

`add` prints a token once; `rotate` prints a new one and lets the old ones live for an
overlap; `revoke` ends them all (in force at the next request on every gateway: each API
request reads its token's row). `set-upstream-credential` stores, encrypted with the key
ring, the credential the PMS itself expects from that integration.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli_support import ConfigOption, Refused, load_config_and_policy, run_command

if TYPE_CHECKING:
    from gateway.access.api_tokens import ApiTokens

api_clients_app = typer.Typer(no_args_is_help=True, help="API clients: issue, rotate and revoke their tokens.")

NameArgument = Annotated[str, typer.Argument(help="The client's name under `api_clients:` in the policy.")]
ValidForOption = Annotated[str, typer.Option("--valid-for", help="Lifetime of the new token, e.g. 365d.")]


Record = Callable[..., Awaitable[None]]


@contextlib.asynccontextmanager
async def _tokens(
    config_path: Path | None, name: str | None, *, token_client: bool = False
) -> AsyncIterator[tuple[ApiTokens, Record]]:
    """The token tables on the gateway's database and key file (`name` must be declared),
    and `record(action, client, **extra)`: each change is written to the audit trail under
    the OS user running the command, never with a token or credential."""
    from gateway.access.api_tokens import ApiTokens
    from gateway.audit.services import command_recorder
    from gateway.auth.keys import KeyRing
    from gateway.db import open_database

    config, policy = load_config_and_policy(config_path)
    if name is not None:
        client = policy.api_clients.get(name)
        if client is None:
            declared = ", ".join(sorted(policy.api_clients)) or "none"
            raise Refused(f"{name!r} is not under `api_clients:` in the policy (declared: {declared})")
        if token_client and client.recognition != "gateway_token":
            raise Refused(f"{name!r} is recognised by `header_pattern`: it uses the PMS's own token, not the gateway's")
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env))
    database = await open_database(config.resolved_database_url)
    try:
        yield ApiTokens(database, keyring), command_recorder(config, database, "api_client")
    finally:
        await database.close()


def _seconds(text: str) -> timedelta:
    from gateway.policy.durations import parse_duration

    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r}: give a positive duration, e.g. 365d")
    return timedelta(seconds=seconds)


def _stamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _show_token(name: str, token: str, expires_at: datetime) -> None:
    typer.echo(f"API token for {name} (shown once; the gateway keeps only its hash):")
    typer.echo(token)
    typer.echo(f"Valid until {_stamp(expires_at)}. Send it as `Authorization: Bearer <token>` (or in the client's "
               "token_header), never in a URL.")


@api_clients_app.command("add")
def api_clients_add(name: NameArgument, valid_for: ValidForOption = "365d", config: ConfigOption = None) -> None:
    """Issue a token for NAME and print it once."""

    async def main():
        async with _tokens(config, name, token_client=True) as (tokens, record):
            token, info = await tokens.issue(name, _seconds(valid_for))
            await record("api_token_issued", name, token_hint=info.hint, expires_at=info.expires_at.isoformat())
            return token, info

    token, info = run_command(main())
    _show_token(name, token, info.expires_at)


@api_clients_app.command("rotate")
def api_clients_rotate(
    name: NameArgument,
    overlap: Annotated[str, typer.Option("--overlap", help="How long the old token(s) stay valid, e.g. 7d.")] = "7d",
    valid_for: ValidForOption = "365d",
    config: ConfigOption = None,
) -> None:
    """Issue a new token for NAME; the old ones stay valid for --overlap, then end."""

    async def main():
        async with _tokens(config, name, token_client=True) as (tokens, record):
            token, info, shortened = await tokens.rotate(name, _seconds(valid_for), _seconds(overlap))
            await record("api_token_rotated", name, token_hint=info.hint, expires_at=info.expires_at.isoformat(),
                         overlap=overlap, older_tokens_shortened=shortened)
            return token, info, shortened

    token, info, shortened = run_command(main())
    _show_token(name, token, info.expires_at)
    typer.echo(f"{shortened} older token(s) stay valid for {overlap} more at most.")


@api_clients_app.command("revoke")
def api_clients_revoke(name: NameArgument, config: ConfigOption = None) -> None:
    """End every token of NAME now, on every gateway."""

    async def main() -> int:
        async with _tokens(config, None) as (tokens, record):  # a client already removed from the policy too
            revoked = await tokens.revoke(name)
            await record("api_tokens_revoked", name, revoked=revoked)
            return revoked

    typer.echo(f"revoked {run_command(main())} token(s) of {name}")


@api_clients_app.command("list")
def api_clients_list(config: ConfigOption = None) -> None:
    """Tokens issued (by their first characters), with their state."""

    async def main():
        async with _tokens(config, None) as (tokens, _record):
            return await tokens.list()

    infos = run_command(main())
    if not infos:
        typer.echo("no API tokens issued")
        return
    now = datetime.now(UTC)
    for info in infos:
        state = "revoked" if info.revoked_at else "valid" if info.valid_at(now) else "expired"
        typer.echo(f"{info.client}  {info.hint}...  {state}  issued {_stamp(info.created_at)}  "
                   f"until {_stamp(info.revoked_at or info.expires_at)}")


@api_clients_app.command("set-upstream-credential")
def api_clients_set_upstream_credential(
    name: NameArgument,
    header: Annotated[str, typer.Option("--header", help="Header the PMS reads it from.")] = "Authorization",
    value_env: Annotated[str | None, typer.Option(
        "--value-env", help="Read the value from this environment variable (else from standard input)."
    )] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget the stored credential.")] = False,
    config: ConfigOption = None,
) -> None:
    """Store (encrypted) the credential the PMS expects from NAME; injected upstream in place
    of the gateway token, e.g. --header Authorization with the value `Token 0123abcd`."""
    from gateway.policy.areas import check_header_name

    value = None
    if not clear:
        check_header_name(header)
        if value_env is not None:
            value = os.environ.get(value_env)
            if not value:
                run_command(_refuse(f"environment variable {value_env} is empty or unset"))
        elif sys.stdin.isatty():
            value = typer.prompt(f"{header} value for {name}", hide_input=True)
        else:
            value = sys.stdin.readline().rstrip("\r\n")
        if not value or "\n" in value or "\r" in value:
            run_command(_refuse("the credential is empty or spans lines"))

    async def main() -> str:
        async with _tokens(config, name, token_client=True) as (tokens, record):
            if clear:
                cleared = await tokens.clear_upstream_credential(name)
                await record("api_upstream_credential_cleared", name, had_one=cleared)
                return "cleared" if cleared else "none stored"
            assert value is not None
            await tokens.set_upstream_credential(name, header, value)
            await record("api_upstream_credential_set", name, header=header)  # never the value
            return f"stored (encrypted) for {name}: sent to the PMS as {header}"

    typer.echo(run_command(main()))


async def _refuse(message: str) -> None:
    raise Refused(message)
