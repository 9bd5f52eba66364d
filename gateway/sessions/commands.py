"""`pms-gateway sessions ...`: who is signed in where, and ending sessions by hand.

Sessions live in the ephemeral store. With Redis (`store_url: redis://...`) these commands
see and end the sessions of every running gateway; with the in-process memory store the
sessions exist only inside the gateway process, so the commands say so instead of
pretending there are none.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_support import ConfigOption, Refused, load_config_and_policy, run_command

sessions_app = typer.Typer(no_args_is_help=True, help="Device sessions: list them, end them.")


async def _manager(config_path: Path | None):
    from gateway.auth.keys import KeyRing
    from gateway.sessions.manager import SessionManager
    from gateway.store import create_store

    config, policy = load_config_and_policy(config_path)
    if config.store_url.startswith("memory"):
        raise Refused(
            "sessions are kept in the gateway process's memory (store_url: memory://); "
            "use a Redis store to manage them from the command line"
        )
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env), create=False)
    return SessionManager(create_store(config.store_url), keyring, lambda: policy)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@sessions_app.command("list")
def sessions_list(
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Live sessions: user, device, IP, login type, started, last activity."""

    async def main() -> list:
        manager = await _manager(config)
        try:
            if user is not None:
                return await manager.sessions_of(user)
            found = [await manager.load(h) for h in await manager.store.set_members("sess-all")]
            return sorted((s for s in found if s is not None), key=lambda s: s.created)
        finally:
            await manager.store.close()

    sessions = run_command(main())
    if not sessions:
        typer.echo("no live sessions")
    for s in sessions:
        row = {
            "user": s.user, "group": s.group, "device": s.device_id[:12], "ip": s.ip, "login_type": s.login_type,
            "started": _when(s.created), "last_active": _when(s.last_active), "session": s.id_hash[:16],
        }  # fmt: skip
        typer.echo(json.dumps(row) if as_json else "  ".join(f"{v}" for v in row.values()))


@sessions_app.command("revoke")
def sessions_revoke(
    user: Annotated[str, typer.Argument(help="End every session of this user (the PMS sessions too).")],
    config: ConfigOption = None,
) -> None:
    """End all sessions of USER at once, on every gateway sharing the store."""
    from gateway.sessions.revocation import end_user_sessions

    async def main() -> int:
        manager = await _manager(config)
        try:
            return await end_user_sessions(manager.store, user, reason="revoked")
        finally:
            await manager.store.close()

    ended = run_command(main())
    typer.echo(f"ended {ended} session(s) of {user}; the gateways end the PMS sessions behind them")
