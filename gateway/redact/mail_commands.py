"""`pms-gateway mail ...`: the SMTP relay's hold queue, for the operator.

`hold` lists the held messages (id, when, size, recipients count, why: never content);
`release ID` scans the message again with the policy in force and delivers its redacted
form only if it now reads whole and the policy lets it pass; `drop ID` deletes it. There
is deliberately no `--force`: a message the relay cannot read whole is never sent, since
a card number could sit in the part it could not read. Such a message is dropped and the
guest reached another way (or the PMS template fixed and the message sent again).

Release and drop are recorded in the audit trail (channel `admin`, decision `mail_release`
or `mail_drop`, with the operator and the held id).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli_support import ConfigOption, Refused, load_config_and_policy, run_command

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.policy.schema import Policy
    from gateway.redact.hold_queue import HoldQueue

mail_app = typer.Typer(no_args_is_help=True, help="The SMTP relay's hold queue: list, release, drop held mail.")

IdArgument = Annotated[str, typer.Argument(help="A held message id, as `pms-gateway mail hold` lists it.")]
OperatorOption = Annotated[str | None, typer.Option("--operator", help="Who does it (recorded in the audit trail).")]


@dataclass
class _Context:
    config: Config
    policy: Policy
    queue: HoldQueue
    keyring: Any


def _context(config_path: Path | None) -> _Context:
    from gateway.auth.keys import KeyRing
    from gateway.redact.hold_queue import HoldQueue, hold_dir

    config, policy = load_config_and_policy(config_path)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env), create=False)
    return _Context(config, policy, HoldQueue(hold_dir(config.data_dir), keyring), keyring)


@asynccontextmanager
async def _audit(ctx: _Context) -> AsyncIterator[Any]:
    """An `append(entry)` into this instance's chain, opened before anything is changed, so
    that an action that cannot be recorded is not done."""
    from gateway.audit.keys import key_path, load_keys
    from gateway.audit.services import instance_id_of
    from gateway.audit.store import AuditStore
    from gateway.db import open_database

    keys = load_keys(key_path(ctx.config.data_dir))
    database = await open_database(ctx.config.resolved_database_url)
    store = AuditStore(database, keys)
    try:
        yield lambda entry: store.append([entry], instance_id_of(ctx.config))
    finally:
        await database.close()


def _run(coro: Any) -> Any:
    from gateway.audit.keys import AuditKeyError
    from gateway.auth.keys import KeyFileError
    from gateway.redact.hold_queue import HeldNotFound

    return run_command(coro, AuditKeyError, KeyFileError, HeldNotFound)


@mail_app.command("hold")
def mail_hold(config: ConfigOption = None) -> None:
    """List held messages, oldest first: id, when, size, recipients, why."""

    async def main() -> list[Any]:
        ctx = _context(config)
        return [ctx.queue.get(i) for i in ctx.queue.ids()]

    held = _run(main())
    if not held:
        typer.echo("no held mail")
        return
    for message in held:
        when = datetime.fromtimestamp(message.held_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        typer.echo(f"{message.id}  {when}  {len(message.data)} bytes  {len(message.rcpt_tos)} recipient(s)  "
                   f"{message.reason}")


@mail_app.command("release")
def mail_release(message_id: IdArgument, operator: OperatorOption = None, config: ConfigOption = None) -> None:
    """Scan a held message again with the policy in force; deliver its redacted form only if
    it now reads whole and passes the policy. Otherwise it stays held."""
    from gateway.audit.entry import admin_entry
    from gateway.redact.engine import Redactor
    from gateway.redact.smtp_relay import deliver

    async def main() -> str:
        ctx = _context(config)
        held = ctx.queue.get(message_id)
        redactor = Redactor(ctx.policy.notifications, hash_key=ctx.keyring.derive("redaction-pseudonyms"))
        outcome = redactor.redact_email(held.data)
        if outcome.blocked:
            raise Refused(f"{message_id} stays held: {outcome.reason}. It cannot be sent; "
                          f"`pms-gateway mail drop {message_id}` deletes it.")
        async with _audit(ctx) as append:
            reply, action, reason = await deliver(
                ctx.config.smtp_relay, outcome.data, held.mail_from, held.rcpt_tos, held.mail_options
            )
            if action != "forwarded":
                raise Refused(f"{message_id} stays held: the smarthost answered {reply}")
            ctx.queue.drop(message_id)
            await append(admin_entry(
                "mail_release", operator=operator, reason=f"held mail {message_id} released and delivered",
                extra={"held_id": message_id, "detectors": outcome.counts(), "smarthost": reason or "accepted"},
            ))
        return reply

    _run(main())
    typer.echo(f"released {message_id}: delivered (redacted) and removed from the hold queue")


@mail_app.command("drop")
def mail_drop(message_id: IdArgument, operator: OperatorOption = None, config: ConfigOption = None) -> None:
    """Delete a held message from disk, unsent."""
    from gateway.audit.entry import admin_entry

    async def main() -> None:
        ctx = _context(config)
        held = ctx.queue.get(message_id)  # a wrong id or key is an error, not a silent no-op
        async with _audit(ctx) as append:
            ctx.queue.drop(message_id)
            await append(admin_entry(
                "mail_drop", operator=operator, reason=f"held mail {message_id} deleted unsent",
                extra={"held_id": message_id, "held_reason": held.reason},
            ))

    _run(main())
    typer.echo(f"dropped {message_id}: deleted from the hold queue, not sent")
