"""Putting the audit trail, login history and alerts together for one gateway process.

`build_audit` is what `gateway.assembly` calls: it returns the addon (which owns the
writer's lifetime), the `LoginHistory` the login code reports to, and the `Alerter` other
features (lockouts, the notification relay) raise alerts through. One of each per
process, so throttling and the chain head are shared.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.addon import AuditAddon
from gateway.audit.entry import AuditEntry
from gateway.audit.heads import HeadExporter, heads_path
from gateway.audit.keys import AuditKeys, key_path, load_or_create_keys
from gateway.audit.logins import LoginHistory
from gateway.audit.outbound import OutboundAuditSink
from gateway.audit.retention import RetentionTask
from gateway.audit.spool import Spool, spool_dir
from gateway.audit.store import AuditStore
from gateway.audit.prepare import EntryPreparer, rules_from_policy
from gateway.audit.writer import AuditWriter, RecordQueue, settings_from_policy
from gateway.audit.writer_link import Start
from gateway.audit.writer_process import ProcessWriter
from gateway.config import Config
from gateway.db import Database
from gateway.notify.alerter import Alerter
from gateway.notify.email import EmailSender
from gateway.notify.webhook import WebhookSender
from gateway.policy.reload import PolicyHolder
from gateway.risk.geoip import GeoLocator
from gateway.store.base import EphemeralStore


async def record_admin_action(
    config: Config, database: Database, entry: AuditEntry, keys: AuditKeys | None = None
) -> None:
    """Append one admin record (an operator's command-line action) to this instance's chain,
    from a process that runs no writer: the command's own, before it reports success.

    Every command records this way (users, operators, api-clients, audit, mail). `keys`:
    ones the command loaded itself (`--key FILE`, or loaded before it changed anything, so
    that an action that could not be recorded is not done); else the data dir's, created
    on first use."""
    keys = keys or load_or_create_keys(key_path(config.data_dir))
    await AuditStore(database, keys).append([entry], instance_id_of(config))


CommandRecord = Callable[..., Awaitable[None]]


def command_recorder(config: Config, database: Database, subject: str) -> CommandRecord:
    """`await record(action, name, **extra)` for a command-line command: an admin record under
    the OS user running it (`cli_actor`, what the host vouches for), naming what it acted on
    as `identifiers[subject]` (`user`, `operator`, `api_client`), never a secret."""
    from gateway.audit.entry import admin_entry
    from gateway.cli_support import cli_actor

    async def record(action: str, name: str, **extra: object) -> None:
        entry = admin_entry(action, operator=cli_actor(), reason="command line", identifiers={subject: name},
                            extra=extra)
        await record_admin_action(config, database, entry)

    return record


def instance_id_of(config: Config) -> str:
    """This instance's chain name: `instance_id`, else the host name."""
    return config.instance_id or socket.gethostname()


def build_alerter(config: Config, policy: PolicyHolder, geo: GeoLocator | None = None) -> Alerter:
    return Alerter(
        policy,
        EmailSender(config.smtp, lambda: policy().alerts.email_to),
        WebhookSender(config.alerts_webhook),
        instance_id=instance_id_of(config),
        geo=geo,
    )


@dataclass
class AuditServices:
    keys: AuditKeys
    geo: GeoLocator
    alerter: Alerter
    store: AuditStore
    writer: RecordQueue
    addon: AuditAddon
    login_history: LoginHistory
    outbound: OutboundAuditSink

    async def close(self) -> None:
        """After the gateway and the outbound listeners stopped (the addon drained the
        writer when the proxy stopped; records the relay added since are written now)."""
        await self.writer.close()
        await self.alerter.close()
        self.geo.close()


async def build_audit(
    config: Config,
    policy: PolicyHolder,
    database: Database,
    *,
    geo: GeoLocator | None = None,
    alerter: Alerter | None = None,
    data_dir: Path | None = None,
    ephemeral: EphemeralStore | None = None,
    writer_process: bool | None = None,
) -> AuditServices:
    """`ephemeral`: the ephemeral store, where the login history reads the RDAP owners found.

    `writer_process`: write the trail from a child process (`ProcessWriter`), so its CPU
    never competes with the event loop for the GIL. By default it does whenever it can:
    not for an in-memory SQLite database (one process's memory) nor with a `geo` object
    handed in (the child opens its own from the configuration)."""
    data_dir = data_dir or config.data_dir
    keys = load_or_create_keys(key_path(data_dir))
    own_geo = geo is None
    geo = geo or GeoLocator(config.geoip)
    alerter = alerter or build_alerter(config, policy, geo)
    instance = instance_id_of(config)
    store = AuditStore(database, keys)
    if writer_process is None:
        writer_process = own_geo and not _in_memory(database)
    writer: RecordQueue
    if writer_process:
        start = Start(database.engine.url.render_as_string(hide_password=False), database.schema_version, keys,
                      spool_dir(data_dir), instance, config.geoip, config.log.format, config.log.level)
        writer = ProcessWriter(start, settings_from_policy(policy), rules_from_policy(policy))
    else:
        writer = AuditWriter(store, Spool(spool_dir(data_dir), instance), instance, EntryPreparer(policy, geo),
                             settings_from_policy(policy))
    exporter = HeadExporter(
        database, instance, heads_path(data_dir), lambda: policy().audit.head_export_interval, alerter.publish
    )
    retention = RetentionTask(database, keys, policy, writer.put)
    addon = AuditAddon(writer, policy, exporter, [retention])
    history = LoginHistory(database, geo, policy, alerter, store=ephemeral)
    return AuditServices(keys, geo, alerter, store, writer, addon, history, OutboundAuditSink(writer))


def _in_memory(database: Database) -> bool:
    url = database.engine.url
    return database.dialect == "sqlite" and url.database in (None, "", ":memory:")
