"""`pms-gateway risk ...`: the operator's side of the risk data the gateway reads offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_support import ConfigOption, load_settings

risk_app = typer.Typer(no_args_is_help=True, help="Risk data: the Tor exit list the captcha reads.")
tor_app = typer.Typer(no_args_is_help=True, help="The Tor exit list (captcha.when: tor), refreshed by you.")
risk_app.add_typer(tor_app, name="tor-list")


@tor_app.command("update")
def tor_list_update(
    source: Annotated[Path, typer.Argument(help="Tor's exit list, saved from https://check.torproject.org/torbulkexitlist "
                                                "(or the exit-addresses format).")],
    config: ConfigOption = None,
) -> None:
    """Check FILE and install it as the gateway's Tor exit list (in the data directory).

    The gateway downloads nothing at run time: fetch the list on a machine allowed to, as
    often as you like (it changes hourly), and run this; running gateways pick it up
    within seconds."""
    from gateway.risk.ownership import install_tor_list, tor_list_path

    settings = load_settings(config)
    try:
        count = install_tor_list(source, settings.data_dir)
    except (OSError, UnicodeError, ValueError) as exc:
        typer.echo(f"{source}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{count} Tor exit addresses installed in {tor_list_path(settings.data_dir)}")
