"""What the `pms-gateway` commands share: the --config option, loading the deployment
settings and policy, and how a command fails (a message on stderr, exit status 1).

Imports stay light (the heavy modules load inside the functions) so that `--help` is fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.policy.schema import Policy

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Deployment settings (config.yaml). Environment variables PMS_GATEWAY_* override it."),
]


class Refused(Exception):
    """A command-level refusal: printed as is, exit status 1."""


def fail(error: Exception) -> NoReturn:
    typer.echo(str(error), err=True)
    raise typer.Exit(1)


def load_settings(config_path: Path | None, status: int = 1) -> Config:
    """The deployment settings; an invalid file ends the command (exit `status`: 2 for `run`)."""
    from gateway.config import load_config
    from gateway.policy import ConfigError

    try:
        return load_config(config_path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(status) from None


def load_config_and_policy(config_path: Path | None) -> tuple[Config, Policy]:
    from gateway.config import load_config
    from gateway.policy import load_policy

    config = load_config(config_path)
    return config, load_policy(*config.policy_paths)


def run_command(coro: Coroutine[Any, Any, T], *expected: type[Exception]) -> T:
    """Run a command's coroutine; a refusal, a configuration error, a missing file, a bad
    value or one of the `expected` errors ends it with `error: ...` and exit status 1."""
    from gateway.policy import ConfigError

    try:
        return asyncio.run(coro)
    except (Refused, ConfigError, FileNotFoundError, ValueError, *expected) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def cli_actor(label: str | None = None) -> str:
    """Who a command runs as, for the audit trail: the OS user (what the host vouches for),
    with `--operator` kept only as a label beside it. Console operators are accounts of
    their own (`pms-gateway operators`); on the command line the shell user is the identity."""
    import getpass

    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):
        os_user = "uid-unknown"
    return f"os:{os_user}" + (f" as {label.strip()[:64]}" if label and label.strip() else "")
