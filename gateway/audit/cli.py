"""`pms-gateway audit ...`, `pms-gateway logins` and `pms-gateway ips ...`.

Read-only commands (verify, query, tail, export, logins, ips) need the database and the
audit key file (`<data_dir>/audit.key`, or --key) but never create either. Commands that
change something (purge, erase, ips forget) record what they did in the trail.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gateway.cli_support import ConfigOption, Refused, load_config_and_policy, run_command

if TYPE_CHECKING:
    from gateway.audit.keys import AuditKeys
    from gateway.audit.query import QueryFilter
    from gateway.config import Config
    from gateway.db import Database
    from gateway.policy.schema import Policy

__all__ = ["audit_app", "ips_app", "logins_command"]

T = TypeVar("T")

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail: verify, query, follow, export, purge, erase.")
ips_app = typer.Typer(invoke_without_command=True, help="Known IPs of each user; forget one.")

KeyOption = Annotated[Path | None, typer.Option("--key", help="Audit key file (default <data_dir>/audit.key).")]
UserOption = Annotated[str | None, typer.Option("--user", "-u", help="Only this user.")]
IpOption = Annotated[str | None, typer.Option("--ip", help="Only this client address.")]
PathOption = Annotated[str | None, typer.Option("--path", help="Path prefix, or re:REGEX.")]
IdentifierOption = Annotated[str | None, typer.Option("--identifier", help="NAME=VALUE, e.g. reservation=123.")]
_WHEN_HELP = ("yesterday, today, an age like 2h or 7d, or a date/time like 2025-03-01 or 2025-03-01T08:00 "
              "(the property's time zone unless an offset is given).")
SinceOption = Annotated[str | None, typer.Option("--since", help="From: " + _WHEN_HELP)]
UntilOption = Annotated[str | None, typer.Option("--until", help="Until: " + _WHEN_HELP)]
DecisionOption = Annotated[str | None, typer.Option("--decision", help="allowed, denied, refused, ...")]
InstanceOption = Annotated[str | None, typer.Option("--instance", help="Only this gateway instance's chain.")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from gateway.audit.keys import AuditKeyError

    return run_command(coro, AuditKeyError)


@dataclass
class _Context:
    config: Config
    policy: Policy
    database: Database
    key_file: Path

    def keys(self) -> AuditKeys:
        from gateway.audit.keys import load_keys

        return load_keys(self.key_file)

    def normalise(self, name: str) -> str:
        return self._directory().normalise(name)

    def _directory(self) -> Any:
        from gateway.auth.users import UserDirectory

        # Only the name and group rules are used here: no key ring, no store.
        return UserDirectory(self.database, None, lambda: self.policy, None)  # type: ignore[arg-type]


@asynccontextmanager
async def _context(config_path: Path | None, key: Path | None = None) -> AsyncIterator[_Context]:
    from gateway.audit.keys import key_path
    from gateway.db import open_database

    config, policy = load_config_and_policy(config_path)
    database = await open_database(config.resolved_database_url)
    try:
        yield _Context(config, policy, database, key or key_path(config.data_dir))
    finally:
        await database.close()


async def _record(ctx: _Context, entry: Any) -> None:
    """Append an admin record to this instance's chain (with the command's own key file)."""
    from gateway.audit.services import record_admin_action

    await record_admin_action(ctx.config, ctx.database, entry, ctx.keys())


def _when(ctx: _Context, option: str, text: str | None) -> datetime | None:
    from zoneinfo import ZoneInfo

    from gateway.readers.moments import parse_moment

    if text is None:
        return None
    try:
        return parse_moment(text, zone=ZoneInfo(ctx.policy.property_timezone))
    except ValueError as exc:
        raise Refused(f"{option}: {exc}") from None


# Identifiers the commands themselves record (ips forget, operators ...), beside the policy's.
COMMAND_IDENTIFIERS = ("ip", "operator", "user")


def _identifier(ctx: _Context, text: str) -> tuple[str, str]:
    """`--identifier NAME=VALUE`, NAME one the policy's `audit.identifiers` (or a command) records."""
    name, sep, value = text.partition("=")
    if not sep:
        raise Refused("--identifier is NAME=VALUE, e.g. reservation=123")
    defined = sorted(ctx.policy.audit.identifiers)
    if name not in defined and name not in COMMAND_IDENTIFIERS:
        raise Refused(f"--identifier: no identifier {name!r}; the policy's audit.identifiers defines "
                      f"{', '.join(defined) or 'none'} (and commands record {', '.join(COMMAND_IDENTIFIERS)})")
    return name, value


def _filters(ctx: _Context, user: str | None, ip: str | None, path: str | None, identifier: str | None,
             since: str | None, until: str | None, decision: str | None, instance: str | None) -> QueryFilter:
    from gateway.audit.query import QueryFilter

    return QueryFilter(
        user=ctx.normalise(user) if user is not None else None, ip=ip, path=path,
        identifier=_identifier(ctx, identifier) if identifier is not None else None,
        since=_when(ctx, "--since", since), until=_when(ctx, "--until", until), decision=decision, instance_id=instance,
    )


_TABLE = ("at", "user", "client_ip", "city", "method", "path", "status", "decision", "identifiers")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


class _Printer:
    """Records as an aligned table, JSON Lines or CSV on stdout (or a file)."""

    def __init__(self, fmt: str, out: Any = None) -> None:
        if fmt not in ("table", "jsonl", "csv"):
            raise Refused(f"unknown format {fmt!r}: table, jsonl or csv")
        self.fmt, self.out = fmt, out or sys.stdout
        self._csv: Any = None
        if fmt == "table":
            self.out.write("  ".join(name.upper() for name in _TABLE) + "\n")

    def write(self, record: dict[str, Any]) -> None:
        record = {k: v for k, v in record.items() if k != "id"}
        if self.fmt == "jsonl":
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            if self._csv is None:
                self._csv = csv.DictWriter(self.out, fieldnames=list(record), lineterminator="\n")
                self._csv.writeheader()
            self._csv.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                                for k, v in record.items()})
        else:
            self.out.write("  ".join(_cell(record.get(name)) for name in _TABLE) + "\n")
        self.out.flush()


# -- audit ------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    heads: Annotated[Path | None, typer.Option("--heads", help="Exported heads (heads.jsonl, or log lines); "
                                               "default <data_dir>/heads.jsonl when present.")] = None,
    instance: InstanceOption = None,
    key: KeyOption = None,
) -> None:
    """Check the whole trail; name the first record altered, removed or reordered, and a
    cut-off tail. Exit 1 on any break."""
    from gateway.audit.heads import heads_path, read_exported_heads
    from gateway.audit.verify import verify_trail

    async def main() -> Any:
        async with _context(config, key) as ctx:
            source = heads or heads_path(ctx.config.data_dir)
            exported = read_exported_heads(source) if (heads is not None or source.exists()) else []
            return await verify_trail(ctx.database, ctx.keys(), exported, instance), source if exported else None

    report, source = _run(main())
    for chain in report.chains:
        anchored = f", anchored at seq {chain.anchored_at} by retention" if chain.anchored_at else ""
        typer.echo(f"{chain.instance_id}: {chain.records} records, seq {chain.first_seq or '-'}..{chain.last_seq}"
                   f"{anchored}; {chain.heads_checked} exported head(s) checked")
    if source is not None:
        typer.echo(f"exported heads from {source}")
    if report.ok:
        typer.echo("OK: every chain verifies")
        return
    for finding in report.findings:
        typer.echo(f"BROKEN {finding}", err=True)
    for chain in report.chains:
        if chain.unreported:
            typer.echo(f"BROKEN {chain.instance_id}: {chain.unreported} further break(s) not listed", err=True)
    raise typer.Exit(1)


@audit_app.command("query")
def audit_query(
    config: ConfigOption = None,
    user: UserOption = None, ip: IpOption = None, path: PathOption = None, identifier: IdentifierOption = None,
    since: SinceOption = None, until: UntilOption = None, decision: DecisionOption = None,
    instance: InstanceOption = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many records.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, jsonl or csv.")] = "table",
    key: KeyOption = None,
) -> None:
    """Records matching every filter given, oldest first; e.g. who opened reservation 123:
    `--identifier reservation=123`."""

    async def main() -> int:
        from gateway.audit.query import AuditReader

        async with _context(config, key) as ctx:
            filters = _filters(ctx, user, ip, path, identifier, since, until, decision, instance)
            printer = _Printer(fmt)
            count = 0
            async for record in AuditReader(ctx.database, ctx.keys()).records(filters, limit=limit):
                printer.write(record)
                count += 1
            return count

    count = _run(main())
    if fmt == "table":
        typer.echo(f"({count} records)", err=True)


@audit_app.command("export")
def audit_export(
    config: ConfigOption = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    user: UserOption = None, ip: IpOption = None, path: PathOption = None, identifier: IdentifierOption = None,
    since: SinceOption = None, until: UntilOption = None, decision: DecisionOption = None,
    instance: InstanceOption = None,
    key: KeyOption = None,
) -> None:
    """Every matching record, decrypted, as JSON Lines or CSV (for the data controller)."""
    if fmt not in ("jsonl", "csv"):
        typer.echo("error: --format is jsonl or csv", err=True)
        raise typer.Exit(1)

    async def main() -> int:
        from gateway.audit.query import AuditReader

        async with _context(config, key) as ctx:
            filters = _filters(ctx, user, ip, path, identifier, since, until, decision, instance)
            handle = open(output, "w", encoding="utf-8", newline="") if output else None
            try:
                printer = _Printer(fmt, handle)
                count = 0
                async for record in AuditReader(ctx.database, ctx.keys()).records(filters):
                    printer.write(record)
                    count += 1
                return count
            finally:
                if handle is not None:
                    handle.close()

    count = _run(main())
    if output is not None:
        typer.echo(f"{count} records written to {output}", err=True)


@audit_app.command("tail")
def audit_tail(
    config: ConfigOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Records to show first.")] = 20,
    user: UserOption = None, ip: IpOption = None, path: PathOption = None, decision: DecisionOption = None,
    fmt: Annotated[str, typer.Option("--format", help="table, jsonl or csv.")] = "table",
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls with -f.")] = 1.0,
    key: KeyOption = None,
) -> None:
    """The newest records; with -f, follow the trail as it grows (Ctrl+C stops)."""

    async def main() -> None:
        from gateway.audit.query import AuditReader

        async with _context(config, key) as ctx:
            filters = _filters(ctx, user, ip, path, None, None, None, decision, None)
            reader = AuditReader(ctx.database, ctx.keys())
            printer = _Printer(fmt)
            top = await reader.last_id()
            recent: deque[dict[str, Any]] = deque(maxlen=max(lines, 0))
            if lines:  # look back far enough for filtered output; records are id-ordered
                async for record in reader.records(filters, after_id=max(top - lines * 50, 0)):
                    if record["id"] <= top:
                        recent.append(record)
            for record in recent:
                printer.write(record)
            while follow:
                await asyncio.sleep(interval)
                newest = await reader.last_id()
                async for record in reader.records(filters, after_id=top):
                    if record["id"] <= newest:
                        printer.write(record)
                top = newest

    try:
        _run(main())
    except KeyboardInterrupt:
        pass


@audit_app.command("head")
def audit_head(config: ConfigOption = None) -> None:
    """Print every chain's current head as heads.jsonl lines: keep a copy off this host."""
    from gateway.audit.store import read_heads

    async def main() -> list[Any]:
        async with _context(config) as ctx:
            return await read_heads(ctx.database)

    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for head in _run(main()):
        typer.echo(json.dumps({"instance_id": head.instance_id, "seq": head.seq, "mac": head.mac,
                               "exported_at": stamp}, separators=(",", ":")))


@audit_app.command("purge")
def audit_purge(
    config: ConfigOption = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who runs the purge (recorded).")] = None,
    key: KeyOption = None,
) -> None:
    """Delete records and login history older than audit.retention, and known IPs unused
    for known_ips.keep_for, keeping the trail verifiable (the purge is recorded)."""
    from gateway.audit.retention import purge

    async def main() -> Any:
        async with _context(config, key) as ctx:
            result = await purge(ctx.database, ctx.keys(), ctx.policy)
            await _record(ctx, result.entry(operator))
            return result

    result = _run(main())
    typer.echo(f"purged {result.records} audit records and {result.login_history} logins before "
               f"{result.cutoff.isoformat(timespec='seconds')}, {result.known_ips} stale known IPs")


@audit_app.command("erase")
def audit_erase(
    config: ConfigOption = None,
    user: Annotated[str | None, typer.Option("--user", help="Erase this user.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Erase this address's anonymous records.")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who erases (recorded).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    key: KeyOption = None,
) -> None:
    """Destroy a person's key: their name, addresses and identifiers in the trail read
    "[erased]" for good (verification still passes); their login history and known IPs
    are deleted."""
    from gateway.audit.erasure import erase

    if (user is None) == (ip is None):
        typer.echo("error: give exactly one of --user NAME or --ip ADDRESS", err=True)
        raise typer.Exit(1)
    if not yes:
        typer.confirm(f"Erase {'user ' + user if user else 'address ' + str(ip)} for good?", abort=True)

    async def main() -> Any:
        async with _context(config, key) as ctx:
            kind, value = ("user", ctx.normalise(user)) if user is not None else ("ip", str(ip))
            result = await erase(ctx.database, ctx.keys(), kind, value)
            await _record(ctx, result.entry(kind, operator))
            return result

    result = _run(main())
    if result.subject_id is None:
        typer.echo(f"no audit records for that {'user' if user else 'address'}; "
                   f"deleted {result.login_history} logins, {result.known_ips} known IPs")
    else:
        typer.echo(f"erased subject {result.subject_id}: {result.records} audit records now read [erased]; "
                   f"deleted {result.login_history} logins, {result.known_ips} known IPs")


# -- logins -----------------------------------------------------------------------------
def logins_command(
    config: ConfigOption = None,
    user: UserOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per login.")] = False,
) -> None:
    """Login history, newest first: who, when, from where, outcome, new address, network owner (RDAP)."""
    from gateway.audit.logins import recent_logins

    async def main() -> list[dict[str, Any]]:
        async with _context(config) as ctx:
            return await recent_logins(ctx.database, ctx.normalise(user) if user else None, limit)

    rows = _run(main())
    if as_json:
        for row in rows:
            typer.echo(json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}))
        return
    if not rows:
        typer.echo("no logins recorded")
        return
    table = [("AT", "USER", "IP", "PLACE", "OUTCOME", "TYPE", "NEW IP", "NETWORK OWNER")] + [
        (r["at"].strftime("%Y-%m-%d %H:%M:%S"), r["username"], r["ip"],
         ", ".join(p for p in (r["city"], r["country"]) if p) or "-", r["outcome"], r["login_type"],
         "yes" if r["new_ip"] else "", r["owner"] or "")
        for r in rows
    ]
    _echo_table(table)


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# -- known IPs --------------------------------------------------------------------------
@ips_app.callback()
def ips_list(
    context: typer.Context,
    config: ConfigOption = None,
    user: UserOption = None,
) -> None:
    """Known IPs (IPv6 by network) per user, most recent first; entries past known_ips.keep_for are not listed."""
    if context.invoked_subcommand is not None:
        return
    from gateway.audit.known_ips import list_known

    async def main() -> list[Any]:
        async with _context(config) as ctx:
            return await list_known(ctx.database, ctx.policy.known_ips.keep_for, datetime.now(UTC),
                                    ctx.normalise(user) if user else None)

    known = _run(main())
    if not known:
        typer.echo("no known IPs")
        return
    _echo_table([("USER", "ADDRESS", "PLACE", "FIRST SEEN", "LAST SEEN")] + [
        (k.user, k.ip_prefix, ", ".join(p for p in (k.city, k.country) if p) or "-",
         k.first_seen.strftime("%Y-%m-%d %H:%M"), k.last_seen.strftime("%Y-%m-%d %H:%M"))
        for k in known
    ])


@ips_app.command("forget")
def ips_forget(
    user: Annotated[str, typer.Argument(help="The user whose known IP to forget.")],
    ip: Annotated[str, typer.Argument(help="The address (an IPv6 address forgets its whole network).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Only a label recorded beside the OS user "
                                                 "running the command (who is recorded).")] = None,
    config: ConfigOption = None,
) -> None:
    """Forget a known IP, so the next login from it alerts again (recorded in the trail under the OS user)."""
    from gateway.audit.entry import admin_entry
    from gateway.audit.known_ips import forget
    from gateway.cli_support import cli_actor

    async def main() -> list[str]:
        async with _context(config) as ctx:
            target = ctx.normalise(user)
            removed = await forget(ctx.database, target, ip, ctx.policy)
            await _record(ctx, admin_entry(
                "forget_known_ip", operator=cli_actor(operator), reason=reason or "command line",
                identifiers={"user": target, "ip": ip}, extra={"removed": len(removed)},
            ))
            return removed

    removed = _run(main())
    if removed:
        typer.echo(f"forgot {', '.join(removed)} for {user}")
    else:
        typer.echo(f"{user} had no known IP {ip} (recorded anyway)")
