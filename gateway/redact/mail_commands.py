"""`pms-gateway mail ...`: the SMTP relay's delivery queue and hold queue, for the operator.

Delivery queue (mail accepted and redacted, waiting for the smarthost): `queue` lists it
(id, age, size, recipients per state, attempts, next attempt, last reply codes: never
addresses or content); `retry ID|--all` makes messages due now; `drop ID` deletes one
unsent. Hold queue (mail the relay could not read whole): `hold` lists it; `release ID`
scans the message again with the policy in force and, only if it now reads whole and the
policy lets it pass, moves its redacted form to the delivery queue; `drop ID` deletes it.
There is deliberately no `--force`: a message the relay cannot read whole is never sent,
since a card number could sit in the part it could not read.

A running gateway is the queue's only deliverer: with one running, `retry` and `release`
leave the attempt to it (within 15 seconds); without one, the command delivers itself.
Release, retry and drop are recorded in the audit trail (channel `admin`, decision
`mail_release`, `mail_retry` or `mail_drop`, with the operator and the id).
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
    from gateway.redact.mail_queue import MailQueue

mail_app = typer.Typer(
    no_args_is_help=True, help="The SMTP relay's queues: list, retry, release, drop queued and held mail."
)

IdArgument = Annotated[str, typer.Argument(help="A held message id, as `pms-gateway mail hold` lists it.")]
AnyIdArgument = Annotated[str, typer.Argument(help="A queued or held message id (`mail queue`, `mail hold`).")]
OperatorOption = Annotated[str | None, typer.Option("--operator", help="Who does it (recorded in the audit trail).")]


@dataclass
class _Context:
    config: Config
    policy: Policy
    queue: HoldQueue
    keyring: Any
    delivery: MailQueue


def _context(config_path: Path | None) -> _Context:
    from gateway.auth.keys import KeyRing
    from gateway.redact.hold_queue import HoldQueue, hold_dir
    from gateway.redact.mail_queue import MailQueue, queue_dir

    config, policy = load_config_and_policy(config_path)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env), create=False)
    return _Context(config, policy, HoldQueue(hold_dir(config.data_dir), keyring), keyring,
                    MailQueue(queue_dir(config.data_dir), keyring))


async def _deliver_unless_a_gateway_does(ctx: _Context, ids: list[str]) -> str:
    """Attempt `ids` now in this process when no gateway delivers the queue; else leave
    them to it. Returns what happened, in a few words."""
    from gateway.redact.delivery import DeliveryWorker

    fd = ctx.delivery.deliverer_lock()
    if fd is None:
        return "the running gateway attempts delivery within 15 seconds"
    try:
        worker = DeliveryWorker(ctx.delivery, ctx.config.smtp_relay)
        for message_id in ids:
            await worker.process(message_id, force=True)
            await worker.run_due()  # a bounce it produced
    finally:
        os.close(fd)
    left = set(ctx.delivery.ids()) & set(ids)
    return "delivered" if not left else f"{len(left)} still queued (see `pms-gateway mail queue`)"


@asynccontextmanager
async def _audit(ctx: _Context) -> AsyncIterator[Any]:
    """An `append(entry)` into this instance's chain, opened before anything is changed, so
    that an action that cannot be recorded is not done."""
    from gateway.audit.keys import key_path, load_keys
    from gateway.audit.services import record_admin_action
    from gateway.db import open_database

    keys = load_keys(key_path(ctx.config.data_dir))
    database = await open_database(ctx.config.resolved_database_url)
    try:
        yield lambda entry: record_admin_action(ctx.config, database, entry, keys)
    finally:
        await database.close()


def _run(coro: Any) -> Any:
    from gateway.audit.keys import AuditKeyError
    from gateway.auth.keys import KeyFileError
    from gateway.redact.hold_queue import HeldNotFound
    from gateway.redact.mail_queue import QueueNotFound

    return run_command(coro, AuditKeyError, KeyFileError, HeldNotFound, QueueNotFound)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@mail_app.command("queue")
def mail_queue(config: ConfigOption = None) -> None:
    """List the delivery queue, oldest first: id, when queued, size, recipients per state,
    attempts, next attempt, last reply codes."""

    async def main() -> list[Any]:
        ctx = _context(config)
        return [ctx.delivery.get(i) for i in ctx.delivery.ids()]

    queued = _run(main())
    if not queued:
        typer.echo("mail queue empty")
        return
    for message in queued:
        states = {s: sum(r.state == s for r in message.recipients) for s in ("pending", "delivered", "failed")}
        codes = ", ".join(sorted({str(r.code) if r.code else "no answer" for r in message.pending()})) or "-"
        sender = "bounce" if not message.mail_from else "mail"
        typer.echo(f"{message.id}  {_when(message.queued_at)}  {len(message.data)} bytes  {sender}  "
                   f"{states['pending']} pending, {states['delivered']} delivered, {states['failed']} failed  "
                   f"{message.attempts} attempt(s)  next {_when(message.next_attempt)}  last reply: {codes}")


@mail_app.command("retry")
def mail_retry(
    message_id: Annotated[str | None, typer.Argument(help="A queued message id (`pms-gateway mail queue`).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every queued message.")] = False,
    operator: OperatorOption = None,
    config: ConfigOption = None,
) -> None:
    """Make queued messages due now (e.g. once the smarthost is fixed), keeping their lifetime."""
    import time

    from gateway.audit.entry import admin_entry

    if (message_id is None) == (not all_):
        raise typer.BadParameter("give one queued message id, or --all (not both)")

    async def main() -> str:
        ctx = _context(config)
        ids = ctx.delivery.ids() if all_ else [message_id]
        async with _audit(ctx) as append:
            with ctx.delivery.state_lock():
                for one in ids:
                    message = ctx.delivery.get(one)
                    message.next_attempt = time.time()
                    ctx.delivery.put(message)
            await append(admin_entry(
                "mail_retry", operator=operator, reason=f"{len(ids)} queued message(s) made due now",
                extra={"queued_ids": ids},
            ))
        return await _deliver_unless_a_gateway_does(ctx, ids) if ids else "nothing queued"

    outcome = _run(main())
    typer.echo(f"retry {'all' if all_ else message_id}: {outcome}")


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
    """Scan a held message again with the policy in force; queue its redacted form for
    delivery only if it now reads whole and passes the policy. Otherwise it stays held."""
    import time

    from gateway.audit.entry import admin_entry
    from gateway.redact.engine import Redactor
    from gateway.redact.mail_queue import QueuedMessage
    from gateway.redact.sealed_files import new_id
    from gateway.redact.smtp_relay import message_id_of

    async def main() -> str:
        ctx = _context(config)
        held = ctx.queue.get(message_id)
        redactor = Redactor(ctx.policy.notifications, hash_key=ctx.keyring.derive("redaction-pseudonyms"))
        outcome = redactor.redact_email(held.data)
        if outcome.blocked:
            raise Refused(f"{message_id} stays held: {outcome.reason}. It cannot be sent; "
                          f"`pms-gateway mail drop {message_id}` deletes it.")
        now = time.time()
        queued = QueuedMessage.new(
            new_id(now), now, outcome.data, held.mail_from, held.rcpt_tos, held.mail_options,
            message_id=message_id_of(outcome.data), channel="mail", detectors=outcome.counts(),
        )
        async with _audit(ctx) as append:
            ctx.delivery.put(queued)  # durable before the held copy goes
            ctx.queue.drop(message_id)
            await append(admin_entry(
                "mail_release", operator=operator, reason=f"held mail {message_id} released to the delivery queue",
                extra={"held_id": message_id, "queued_id": queued.id, "detectors": outcome.counts()},
            ))
        return f"queued as {queued.id}, " + await _deliver_unless_a_gateway_does(ctx, [queued.id])

    result = _run(main())
    typer.echo(f"released {message_id} (redacted): {result}")


@mail_app.command("drop")
def mail_drop(message_id: AnyIdArgument, operator: OperatorOption = None, config: ConfigOption = None) -> None:
    """Delete a queued or held message from disk, unsent."""
    from gateway.audit.entry import admin_entry
    from gateway.redact.hold_queue import HeldNotFound

    async def main() -> str:
        ctx = _context(config)
        try:
            held = ctx.queue.get(message_id)  # a wrong id or key is an error, not a silent no-op
        except HeldNotFound:
            held = None
        if held is not None:
            async with _audit(ctx) as append:
                ctx.queue.drop(message_id)
                await append(admin_entry(
                    "mail_drop", operator=operator, reason=f"held mail {message_id} deleted unsent",
                    extra={"held_id": message_id, "held_reason": held.reason},
                ))
            return "deleted from the hold queue, not sent"
        queued = ctx.delivery.get(message_id)  # QueueNotFound: neither held nor queued
        async with _audit(ctx) as append:
            with ctx.delivery.state_lock():
                ctx.delivery.delete(message_id)
            pending = len(queued.pending())
            await append(admin_entry(
                "mail_drop", operator=operator, reason=f"queued mail {message_id} deleted, {pending} recipient(s) unsent",
                extra={"queued_id": message_id, "pending": pending},
            ))
        return f"deleted from the delivery queue, {pending} recipient(s) not sent"

    result = _run(main())
    typer.echo(f"dropped {message_id}: {result}")
