"""Starting the outbound listeners a configuration enables, beside the inbound proxy.

The SMTP relay shares the gateway's event loop (aiosmtpd is plain asyncio). The egress
proxy is mitmproxy, which must own its event loop, so it runs as a supervised child
process (restarted with backoff, stopped with the gateway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from gateway.config import Config
from gateway.policy.schema import Policy
from gateway.redact.engine import Redactor
from gateway.redact.hold_queue import HoldQueue
from gateway.redact.outbound_audit import LogAudit, OutboundAudit
from gateway.sessions.sealed import Cipher

log = structlog.get_logger("gateway.redact")


class CurrentRedactor:
    """The Redactor for the policy in force, rebuilt only when the policy changes."""

    def __init__(self, policy: Callable[[], Policy], hash_key: bytes) -> None:
        self.policy = policy
        self.hash_key = hash_key
        self._cached: tuple[int, Redactor] | None = None

    def __call__(self) -> Redactor:
        notifications = self.policy().notifications
        if self._cached is None or self._cached[0] != id(notifications):
            self._cached = (id(notifications), Redactor(notifications, hash_key=self.hash_key))
        return self._cached[1]


async def start_outbound(
    config: Config,
    policy: Callable[[], Policy],
    hash_key: bytes,
    audit: OutboundAudit | None = None,
    on_blocked=None,
    hold: HoldQueue | None = None,
    on_held=None,
    *,
    cipher: Cipher | None = None,
    on_delayed=None,
    on_failed=None,
) -> list[Callable[[], Awaitable[None]]]:
    """Start what is enabled; returns the coroutines that stop it again.

    `hold` is the relay's hold queue (messages it cannot read whole), `on_held` the alert
    raised for each. `cipher` (the operator's key ring) seals the delivery queue in
    data_dir; `on_delayed` and `on_failed` alert about late and undeliverable mail.

    `audit` is the gateway's audit trail (None: records are only logged); the egress child
    writes to the same trail, as its own chain `<instance id>-egress`."""
    stops: list[Callable[[], Awaitable[None]]] = []
    trail = audit is not None
    audit = audit or LogAudit()
    if config.smtp_relay.enabled:
        from gateway.redact.delivery import DeliveryWorker
        from gateway.redact.mail_queue import MailQueue, queue_dir
        from gateway.redact.smtp_relay import start_smtp_relay

        if cipher is None:
            raise ValueError("the SMTP relay's delivery queue needs the operator's key ring (cipher)")
        delivery = DeliveryWorker(
            MailQueue(queue_dir(config.data_dir), cipher), config.smtp_relay, audit=audit,
            on_delayed=on_delayed, on_failed=on_failed,
        )
        server = await start_smtp_relay(
            config.smtp_relay, CurrentRedactor(policy, hash_key), audit, on_blocked, hold=hold, on_held=on_held,
            delivery=delivery,
        )

        async def stop_relay() -> None:
            server.close()
            await server.wait_closed()

        stops.append(stop_relay)
    if config.egress.enabled:
        from gateway.redact.egress import AuditTarget, EgressSupervisor

        # With the gateway's audit trail, the child records into it too, as a chain of its
        # own; otherwise it only logs its records, like the relay's LogAudit.
        target = AuditTarget.of(config) if trail else None
        supervisor = EgressSupervisor(config.egress, config.policy_paths, hash_key=hash_key, audit=target)
        await supervisor.start()
        log.info("egress proxy supervised", mode=config.egress.mode, port=config.egress.port)
        stops.append(supervisor.stop)
    return stops
