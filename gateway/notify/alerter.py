"""The alerter: decides which events alert, throttles, and sends in the background.

Callers (login history, lockouts, the notification relay) `await` a method that only
checks the policy and the throttle and queues the alert: sending happens in a background
task, so a slow or dead mail server never delays a login. What the hourly cap holds back
goes out with the next alert, or as a summary (`alerts_held`) once the cap has room. Alerts are best effort: a
delivery failure is retried a few times and logged; the login history and the audit trail
remain the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateway.notify.email import EmailSender
from gateway.notify.events import Alert, AlertKind, held_payload
from gateway.notify.throttle import AlertThrottle
from gateway.notify.webhook import WebhookSender
from gateway.policy.schema import Policy
from gateway.risk.geoip import UNKNOWN, GeoInfo, GeoLocator

log = structlog.get_logger("gateway.notify")

QUEUE_SIZE = 1000
ATTEMPTS = (0.0, 2.0, 10.0)  # delays before each delivery attempt
CLOSE_TIMEOUT = 10.0


def _where(ip: str, geo: GeoInfo) -> str:
    place = geo.place
    return f"{ip} ({place})" if place else ip


class Alerter:
    def __init__(
        self,
        policy: Callable[[], Policy],
        email: EmailSender | None = None,
        webhook: WebhookSender | None = None,
        instance_id: str = "gateway",
        clock: Callable[[], float] = time.monotonic,
        geo: GeoLocator | None = None,
    ) -> None:
        self.policy = policy
        self.geo = geo  # places addresses the caller did not
        self.email = email
        self.webhook = webhook
        self.instance_id = instance_id
        self.throttle = AlertThrottle(clock)
        self._queue: asyncio.Queue[Alert | dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._summary: asyncio.Task[None] | None = None  # sends what the cap held back, once it can
        self.sent = 0

    # -- events ----------------------------------------------------------------------------
    async def new_ip_login(self, user: str, ip: str, geo: GeoInfo | None = None, login_type: str | None = None,
                           owner: str | None = None) -> bool:
        """`owner`: the network's owner by RDAP, when the background lookup had found it."""
        geo = self._locate(ip, geo)
        lines = [f"User: {user}", f"Address: {_where(ip, geo)}"]
        if geo.asn is not None:
            lines.append(f"Network: AS{geo.asn}" + (f" {geo.asn_org}" if geo.asn_org else ""))
        if owner:
            lines.append(f"Network owner (RDAP): {owner}")
        if login_type:
            lines.append(f"Sign-in method: {login_type}")
        lines += ["", f"{user} signed in from an address not seen for this account before.",
                  "If this was not them, revoke their sessions and reset their password and second factor."]
        place = f" in {geo.place}" if geo.place else ""
        return await self.submit(Alert(
            "new_ip_login", f"New sign-in address for {user}: {ip}{place}", tuple(lines), user, ip,
            {"country": geo.country, "city": geo.city, "asn": geo.asn, "login_type": login_type, "owner": owner},
        ))

    async def login(self, user: str, ip: str, geo: GeoInfo | None = None, login_type: str | None = None) -> bool:
        geo = self._locate(ip, geo)
        lines = [f"User: {user}", f"Address: {_where(ip, geo)}"]
        if login_type:
            lines.append(f"Sign-in method: {login_type}")
        return await self.submit(Alert(
            "every_login", f"Sign-in by {user} from {ip}", tuple(lines), user, ip,
            {"country": geo.country, "city": geo.city, "asn": geo.asn, "login_type": login_type},
        ))

    async def lockout(self, user: str | None, ip: str, scope: str | None = None, geo: GeoInfo | None = None) -> bool:
        geo = self._locate(ip, geo)
        who = user or "(no user)"
        lines = [f"User: {who}", f"Address: {_where(ip, geo)}"]
        if scope:
            lines.append(f"Locked: {scope}")
        lines += ["", "Too many failed sign-ins: further attempts are refused for a while."]
        return await self.submit(Alert(
            "lockout", f"Sign-in lockout for {who} from {ip}", tuple(lines), user, ip, {"scope": scope},
        ))

    async def blocked_notification(self, record: Any) -> bool:
        """`record`: the relay's OutboundRecord. Only the channel, the next hop, the reason
        and per-detector counts are reported, never the message or its recipient."""
        channel = str(getattr(record, "channel", "?"))
        detectors = dict(getattr(record, "detectors", {}) or {})
        reason = getattr(record, "reason", None)
        lines = [f"Channel: {channel}", f"Next hop: {getattr(record, 'destination', '?')}"]
        if reason:
            lines.append(f"Reason: {reason}")
        if detectors:
            lines.append("Found: " + ", ".join(f"{name} x{count}" for name, count in sorted(detectors.items())))
        lines += ["", "An outbound notification still contained guest data after redaction and was not sent."]
        return await self.submit(Alert(
            "blocked_notification", f"Outbound {channel} notification blocked", tuple(lines), None, None,
            {"channel": channel, "reason": reason, "detectors": detectors},
        ))

    async def mail_held(self, record: Any) -> bool:
        """`record`: the relay's OutboundRecord of a held message; its reason names the held id.
        Never the message, its subject or its recipients."""
        channel = str(getattr(record, "channel", "?"))
        reason = getattr(record, "reason", None)
        lines = [f"Channel: {channel}", f"Next hop: {getattr(record, 'destination', '?')}"]
        if reason:
            lines.append(f"Reason: {reason}")
        lines += ["", "The SMTP relay could not read this message whole, so it was neither sent nor refused: "
                  "it is kept encrypted in the hold queue. Review it with `pms-gateway mail hold`, then "
                  "`pms-gateway mail release ID` or `pms-gateway mail drop ID`."]
        return await self.submit(Alert(
            "mail_held", f"Outbound {channel} message held for review", tuple(lines), None, None,
            {"channel": channel, "reason": reason},
        ))

    async def mail_delayed(self, record: Any) -> bool:
        """`record`: the delivery queue's OutboundRecord of a late message (its reason: the
        queue id, how long, the smarthost's reply codes). Never recipients or content."""
        return await self._queue_alert("mail_delayed", record, "delayed", (
            "The SMTP relay has kept this message in its queue longer than smtp_relay.delay_warning: the "
            "smarthost has not accepted it yet. It is retried until smtp_relay.queue_lifetime; see "
            "`pms-gateway mail queue`, and `pms-gateway mail retry ID` once the smarthost is fixed."))

    async def mail_failed(self, record: Any) -> bool:
        """`record`: the delivery queue's OutboundRecord of a message that failed for good."""
        return await self._queue_alert("mail_failed", record, "undeliverable", (
            "The smarthost refused this message for good, or it was not delivered within "
            "smtp_relay.queue_lifetime. It was deleted from the queue; the sender was sent a delivery "
            "status notification (unless it is a bounce itself or a no-reply address)."))

    async def _queue_alert(self, kind: AlertKind, record: Any, what: str, explanation: str) -> bool:
        channel = str(getattr(record, "channel", "?"))
        reason = getattr(record, "reason", None)
        lines = [f"Channel: {channel}", f"Next hop: {getattr(record, 'destination', '?')}"]
        if reason:
            lines.append(f"State: {reason}")
        lines += ["", explanation]
        return await self.submit(Alert(
            kind, f"Outbound {channel} message {what}", tuple(lines), None, None,
            {"channel": channel, "reason": reason},
        ))

    def _locate(self, ip: str, geo: GeoInfo | None) -> GeoInfo:
        if geo is not None:
            return geo
        return self.geo.lookup(ip) if self.geo is not None else UNKNOWN

    # -- queueing --------------------------------------------------------------------------
    async def submit(self, alert: Alert) -> bool:
        """Queue `alert` if the policy asks for its kind and the throttle lets it; True if queued."""
        rules = self.policy().alerts
        kind: AlertKind = alert.kind
        if kind not in rules.on:
            return False
        if not self.throttle.admit(alert.dedupe_key, rules.min_interval, rules.max_per_hour, held=alert):
            log.info("alert not sent (duplicate or hourly cap)", kind=kind, user=alert.user, ip=alert.ip)
            if self.throttle.suppressed and (self._summary is None or self._summary.done()):
                self._summary = asyncio.get_running_loop().create_task(self._summary_when_free(), name="alerts-held")
            return False
        return self._enqueue(alert)

    async def send_held(self) -> bool:
        """Send the summary of what the cap held back, if anything was and the cap has room
        now; True if queued. An alert that went out since carried the list already."""
        rules = self.policy().alerts
        if not self.throttle.suppressed or self.throttle.free_in(rules.max_per_hour) > 0:
            return False
        summary = Alert("alerts_held", "Alerts held back by the hourly cap", (
            "The hourly alert cap (alerts.max_per_hour) held back the alerts listed below.",
            "It has room again, so here they are in summary.",
        ))
        if not self.throttle.admit(None, 0, rules.max_per_hour):
            return False
        return self._enqueue(summary)

    async def _summary_when_free(self) -> None:
        """Wait until the cap has room, then send the summary (the clock is the throttle's)."""
        while self.throttle.suppressed:
            wait = self.throttle.free_in(self.policy().alerts.max_per_hour)
            if wait <= 0:
                await self.send_held()
                return
            await asyncio.sleep(min(wait, 60.0))

    async def publish(self, payload: dict[str, Any]) -> None:
        """Send a structured event to the webhook only (exported audit chain heads)."""
        if self.webhook is not None and self.webhook.configured:
            self._enqueue(payload)

    def _enqueue(self, item: Alert | dict[str, Any]) -> bool:
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alerts")
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("alert queue full; alert dropped", kind=getattr(item, "kind", None))
            return False
        return True

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(item)
            finally:
                self._queue.task_done()

    async def _deliver(self, item: Alert | dict[str, Any]) -> None:
        if isinstance(item, dict):
            await self._attempt("webhook", lambda: self.webhook.post(item))  # type: ignore[union-attr]
            return
        held = self.throttle.take_held()
        if item.kind == "alerts_held" and not held:
            return  # an alert that went out meanwhile carried the list
        body = item.body(self.instance_id, held)
        delivered = False
        if self.email is not None and self.email.configured:
            delivered |= await self._attempt("e-mail", lambda: self.email.send(item.subject, body))  # type: ignore[union-attr]
        if self.webhook is not None and self.webhook.configured:
            payload = item.payload(self.instance_id) | {"suppressed": held.count, "held": held_payload(held)}
            delivered |= await self._attempt("webhook", lambda: self.webhook.post(payload))  # type: ignore[union-attr]
        if delivered:
            self.sent += 1
        else:
            log.warning("alert (no channel delivered it)", kind=item.kind, summary=item.subject)

    async def _attempt(self, channel: str, send: Callable[[], Any]) -> bool:
        for attempt, delay in enumerate(ATTEMPTS, 1):
            await asyncio.sleep(delay)
            try:
                result = await send()
            except Exception as exc:
                log.warning("alert delivery failed", channel=channel, attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                continue
            return result is not False
        return False

    async def drain(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait until queued alerts are delivered (or given up)."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._queue.join()

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Give queued alerts `timeout` seconds to go out, then stop."""
        if self._summary is not None:
            self._summary.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summary
            self._summary = None
        if self._task is not None and not self._task.done():
            await self.drain(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._queue = None
        if self.webhook is not None:
            await self.webhook.close()
