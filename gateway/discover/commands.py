"""`pms-gateway login discover URL`: print a `login:` rule for the PMS at URL.

Errors are one sentence with the URL and the fix, exit status 2 (the usage-error status:
the command could not do its job with what it was given). The password of a real login
is read from an environment variable, so that it never appears in the shell's history or
the process list; it is never printed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

login_app = typer.Typer(no_args_is_help=True, help="Fit the gateway to the PMS's login.")


def _stop(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _without(text: str, password: str | None) -> str:
    """`text` with the password masked, as typed and as a URL or form carries it."""
    if not password:
        return text
    from urllib.parse import quote, quote_plus

    for form in {password, quote(password, safe=""), quote_plus(password)}:
        text = text.replace(form, "***")
    return text


@login_app.command("discover")
def discover_command(
    url: Annotated[str, typer.Argument(help="The PMS's login page, reached directly (not through the gateway).")],
    username: Annotated[
        str | None, typer.Option("--username", help="Complete one real login as this user (needs --password-env).")
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="Environment variable holding that user's password."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer of the PMS.")] = 15.0,
) -> None:
    """Read the PMS's login page, send one wrong login, print a commented `login:` rule.

    With --username and --password-env it also completes one real login (and logs out
    again) to learn the success signal and the session cookie for certain.
    """
    from gateway.discover.probe import DiscoverError, discover
    from gateway.discover.rule import render_rule

    password = None
    if (username is None) != (password_env is None):
        _stop(f"{url}: give both --username NAME and --password-env VAR (the name of a variable holding the "
              "password), or neither")
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            _stop(f"{url}: the environment variable {password_env} is unset or empty: export it with the "
                  f"password of {username!r} first")
    try:
        found = asyncio.run(discover(url, username, password, timeout=timeout))
    except DiscoverError as exc:
        _stop(_without(str(exc), password))
    except Exception as exc:  # a page this reader did not foresee: still one line, never a traceback
        _stop(f"{url}: discovery failed ({type(exc).__name__}: {_without(str(exc), password)}); write the login "
              "rule by hand (README: Writing the login rule)")
    typer.echo(render_rule(found, url), nl=False)
