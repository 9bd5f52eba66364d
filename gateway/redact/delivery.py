"""The delivery worker: takes the relay's queued mail to the smarthost, with retries.

Each message is tried at once, then again after 1 min, 2, 4, ... (at most 1 h apart)
until `smtp_relay.queue_lifetime` (default 4 days). Delivery state is per recipient: a
recipient the smarthost accepted is never sent the message again, a 4xx (or an
unreachable smarthost) keeps it pending, a 5xx fails it for good. When no recipient is
pending any more the file is deleted; recipients that failed are reported to the operator
(alert `mail_failed`) and to the envelope sender by an RFC 3464 bounce (`dsn`), unless
the message is itself a bounce or an automatic reply, or comes from one of the PMS's
no-reply addresses. A message still pending after `smtp_relay.delay_warning` alerts the
operator once (`mail_delayed`).

Time comes from an injected clock (wall-clock seconds, since attempt times are kept in
the files across restarts), so tests advance it instead of sleeping. STARTTLS to the
smarthost verifies its certificate (against `smarthost.ca_file` or the system CAs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib

from gateway.redact.dsn import FailedRecipient, build_dsn, is_bounce
from gateway.redact.mail_queue import MailQueue, QueuedMessage, Recipient, QueueNotFound, retry_delay
from gateway.redact.outbound_audit import AlertHook, OutboundAudit, OutboundRecord, alert, emit, one_line
from gateway.redact.sealed_files import new_id
from gateway.redact.settings import SmtpRelaySettings, resolve_secret

log = logging.getLogger(__name__)

POLL = 15.0  # seconds between looks at the queue directory (a `mail retry` from the CLI)


# ---------------------------------------------------------------- one attempt


async def attempt(settings: SmtpRelaySettings, message: QueuedMessage) -> dict[str, tuple[int, str]]:
    """Send `message` to its pending recipients; (reply code, text) per recipient address.

    2xx: delivered; 5xx: refused for good; anything else (4xx, 0 for no answer) is tried
    again later. Refusals about the relay itself (HELO, AUTH, TLS at the smarthost) are
    temporary: the operator fixes them, and the message must not be bounced meanwhile."""
    host = settings.smarthost
    pending = [r.address for r in message.pending()]
    try:
        # The client itself, not aiosmtplib.send: a bounce goes out from the null sender `<>`,
        # which send() refuses.
        client = aiosmtplib.SMTP(
            hostname=host.host,
            port=host.port,
            username=host.username,
            password=resolve_secret(host.password),
            use_tls=host.use_tls,
            start_tls=host.start_tls,
            validate_certs=True,
            cert_bundle=host.ca_file,
            timeout=host.timeout,
            local_hostname=settings.hostname,
        )
        async with client:
            errors, response = await client.sendmail(
                message.mail_from,
                pending,
                message.data,
                # SIZE is stale after redaction; the rest describes the content.
                mail_options=[o for o in message.mail_options if o.upper().startswith(("BODY=", "SMTPUTF8"))],
            )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = {r.recipient: (r.code, one_line(r.message)) for r in exc.recipients}
        return {a: refused.get(a, (0, "not tried")) for a in pending}
    except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
        return dict.fromkeys(pending, (exc.code, one_line(exc.message)))
    except Exception as exc:  # noqa: BLE001 - every failure is an answer per recipient
        what = type(exc).__name__ + (f" {exc.code}" if isinstance(exc, aiosmtplib.SMTPResponseException) else "")
        code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code < 500 else 0
        return dict.fromkeys(pending, (code, f"smarthost unavailable ({what})"))
    accepted = (250, one_line(response))
    return {a: ((errors[a].code, one_line(errors[a].message)) if a in errors else accepted) for a in pending}


# ---------------------------------------------------------------- the worker


@dataclass
class FirstAttempt:
    """The relay waiting on a message's first attempt: while `answering`, a refusal of
    every recipient goes back to the PMS as the smarthost's own 5xx (nothing bounced);
    once the relay has answered 250, failures are bounced like any other."""

    answering: bool = True
    refusal: str | None = None


class DeliveryWorker:
    """Delivers one queue directory; `start` makes this process its only deliverer."""

    def __init__(
        self,
        queue: MailQueue,
        settings: SmtpRelaySettings,
        *,
        audit: OutboundAudit | None = None,
        on_delayed: AlertHook | None = None,
        on_failed: AlertHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.audit = audit
        self.on_delayed = on_delayed
        self.on_failed = on_failed
        self.clock = clock
        self.destination = f"{settings.smarthost.host}:{settings.smarthost.port}"
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._stopping: list[asyncio.Task[object]] = []

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Take the queue (StartupRefused if another process has it) and deliver
        what is due, now and from then on."""
        from gateway.preflight import StartupRefused

        self._lock_fd = await asyncio.to_thread(self.queue.deliverer_lock)
        if self._lock_fd is None:
            raise StartupRefused(
                f"data_dir: {self.queue.directory} is delivered by another running gateway already; a mail "
                "queue belongs to one gateway: stop the other one, or give this one its own data_dir"
            )
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="mail-delivery")

    def close(self) -> None:
        """Stop delivering now: attempts in flight are cancelled (their messages stay
        queued, tried again at the next start) and the queue is released."""
        self._stopping = [t for t in (self._task, *self._inflight.values()) if t is not None and not t.done()]
        for task in self._stopping:
            task.cancel()
        self._task = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def stop(self) -> None:
        """`close`, then wait until the cancelled tasks have ended."""
        self.close()
        for task in self._stopping:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._stopping = []

    def wake(self) -> None:
        """Look at the queue now (a new message, or the clock moved in a test)."""
        self._wake.set()

    async def _loop(self) -> None:
        # A (re)started gateway tries its whole queue at once: a restart often follows a fix.
        force = True
        while True:
            self._wake.clear()
            try:
                next_due = await self.run_due(force=force)
                force = False
            except Exception:
                log.exception("mail queue run failed")
                next_due = None
            wait = POLL if next_due is None else min(max(next_due - self.clock(), 0.0), POLL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    # -- running ---------------------------------------------------------------------------
    async def run_due(self, force: bool = False) -> float | None:
        """Try every message whose time has come (every message with `force`) and wait for
        them; returns when the next is due (clock seconds), None if the queue is empty."""
        next_due: float | None = None
        for message_id in await asyncio.to_thread(self.queue.ids):
            due = await self.process(message_id, force=force)
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
        return next_due

    async def process(self, message_id: str, first: FirstAttempt | None = None, force: bool = False) -> float | None:
        """Bring one message up to date (attempt if due, or now with `force`; warn, expire,
        finish); returns its next attempt time if it stays queued. One task per message."""
        running = self._inflight.get(message_id)
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            return None
        task = asyncio.get_running_loop().create_task(self._process(message_id, first, force), name=f"mail-{message_id}")
        self._inflight[message_id] = task
        task.add_done_callback(lambda _: self._inflight.pop(message_id, None))
        # Shielded: a relay that stops waiting (first_attempt) does not cancel the attempt.
        return await asyncio.shield(task)

    async def first_attempt(self, message_id: str, wait: float) -> str | None:
        """The relay's immediate attempt after queuing: wait up to `wait` seconds for it.
        Returns the smarthost's refusal when every recipient was refused for good in that
        time (the message is then gone: the PMS gets the refusal, not a bounce)."""
        first = FirstAttempt()
        task = asyncio.ensure_future(self.process(message_id, first))
        done, _ = await asyncio.wait({task}, timeout=wait)
        first.answering = False
        if done:
            with contextlib.suppress(Exception):
                task.result()
        return first.refusal

    async def _process(self, message_id: str, first: FirstAttempt | None, force: bool) -> float | None:
        try:
            message = await asyncio.to_thread(self.queue.get, message_id)
        except QueueNotFound as exc:  # dropped meanwhile, or sealed under another key
            if "cannot be opened" in str(exc):
                log.error("queued message %s cannot be opened with this key; left on disk", message_id)
            return None
        now = self.clock()
        expired = now >= message.queued_at + self.settings.queue_lifetime
        if message.pending() and not expired and (force or first is not None or now >= message.next_attempt):
            await self._attempt(message, now)
        if message.pending() and expired:
            for recipient in message.pending():
                recipient.state = "failed"
        if message.pending() and not message.warned and now - message.queued_at >= self.settings.delay_warning:
            message.warned = True
            await alert(self.on_delayed, self._record(message, "deferred", self._summary(message, now)))
        if message.pending():
            if not await asyncio.to_thread(self.queue.update, message):
                log.info("queued message %s was dropped during its attempt", message_id)
                return None
            return message.next_attempt
        await self._finish(message, now, expired, first)
        return None

    async def _attempt(self, message: QueuedMessage, now: float) -> None:
        results = await attempt(self.settings, message)
        for recipient in message.pending():
            code, reply = results.get(recipient.address, (0, "not tried"))
            recipient.code, recipient.reply = code, reply
            if 200 <= code < 300:
                recipient.state = "delivered"
            elif 500 <= code < 600:
                recipient.state = "failed"
        message.attempts += 1
        message.next_attempt = now + retry_delay(message.attempts)
        if message.attempts == 1 and message.pending():
            codes = sorted({r.code for r in message.pending()})
            await emit(self.audit, self._record(message, "deferred", (
                f"queued as {message.id}; {len(message.pending())} recipient(s) deferred "
                f"({', '.join(str(c) if c else 'no answer' for c in codes)}); retried until delivered or expired")))

    async def _finish(self, message: QueuedMessage, now: float, expired: bool, first: FirstAttempt | None) -> None:
        """No recipient pending: record the outcome, bounce what failed, delete the file."""
        failed = [r for r in message.recipients if r.state == "failed"]
        delivered = len(message.recipients) - len(failed)
        if not failed:
            await emit(self.audit, self._record(message, "forwarded", None if message.attempts <= 1 else
                                                f"queued as {message.id}; delivered after {message.attempts} attempts"))
        elif first is not None and first.answering and not delivered:
            # Refused for good while the PMS still waits: it gets the smarthost's answer.
            refusal = failed[0]
            first.refusal = f"{refusal.code} {refusal.reply}"
            await emit(self.audit, self._record(message, "refused", f"smarthost refused ({refusal.code})"))
        else:
            why = "expired" if expired else "refused for good"
            codes = ", ".join(sorted({str(r.code) for r in failed if r.code}))
            reason = (f"queued as {message.id}; {len(failed)} of {len(message.recipients)} recipient(s) {why}"
                      + (f" ({codes})" if codes else "") + f" after {message.attempts} attempt(s)")
            record = self._record(message, "refused", reason)
            await emit(self.audit, record)
            await alert(self.on_failed, record)
            await self._bounce(message, failed, now, expired)
        await asyncio.to_thread(self.queue.delete, message.id)

    async def _bounce(self, message: QueuedMessage, failed: list[Recipient], now: float, expired: bool) -> None:
        if is_bounce(message.mail_from, message.data):
            return  # never a bounce of a bounce
        if message.mail_from.strip("<> ").lower() in self.settings.no_reply_addresses:
            return
        dsn_id = new_id(now)
        data = build_dsn(
            reporting_mta=self.settings.hostname, original=message.data, envelope_from=message.mail_from,
            arrival=message.queued_at, now=now, dsn_id=dsn_id,
            failures=[FailedRecipient(r.address, r.code, r.reply, expired and not 500 <= r.code < 600)
                      for r in failed],
        )
        dsn = QueuedMessage(dsn_id, now, "", [Recipient(message.mail_from)], data, channel=message.channel,
                            message_id=f"<{dsn_id}.dsn@{self.settings.hostname}>", next_attempt=now)
        await asyncio.to_thread(self.queue.put, dsn)
        self.wake()

    # -- reporting -------------------------------------------------------------------------
    def _record(self, message: QueuedMessage, action, reason: str | None) -> OutboundRecord:
        return OutboundRecord(message.channel, self.destination, dict(message.detectors), action, reason,
                              message.message_id, len(message.data))

    @staticmethod
    def _summary(message: QueuedMessage, now: float) -> str:
        hours = (now - message.queued_at) / 3600
        codes = ", ".join(sorted({str(r.code) if r.code else "no answer" for r in message.pending()}))
        return (f"queued as {message.id} {hours:.1f} h ago; {len(message.pending())} recipient(s) pending "
                f"after {message.attempts} attempt(s) ({codes})")
