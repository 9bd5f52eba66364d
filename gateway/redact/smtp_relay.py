"""SMTP relay: the PMS sends its mail here; guest data is redacted before the smarthost.

It runs in the gateway's own event loop (`loop.create_server`, no aiosmtpd Controller
thread) with a handler of our own. It is store and forward: the PMS gets 250 only once
the redacted message is durably in the delivery queue (`mail_queue`: sealed, fsynced,
0600, in data_dir), and the delivery worker (`delivery`) takes it to the smarthost with
retries for `smtp_relay.queue_lifetime`. A PMS that never retries (many do not) thus
loses no confirmation to a smarthost that is down. The relay tries the smarthost at once
and waits a few seconds for that attempt, so in the ordinary case the mail has left when
the PMS hears 250, and a recipient the smarthost refuses for good right away is refused
to the PMS with the smarthost's own 5xx (nothing is bounced then).

Other answers: 554 when the policy blocks the message (permanent, so the PMS does not
retry it forever) or when it has passed too many relays (a loop); 452 when the data
directory is below `smtp_relay.disk_reserve` (the PMS keeps the mail and retries; we do
not accept what we cannot keep); 451 when redaction or the queue write failed.

A message the relay cannot read whole (see `formats.mime.NotFullyParsed`) is neither sent
nor refused: it goes to the hold queue (`hold_queue`), the operator is alerted
(`mail_held`), and the PMS gets 250 once the message is on disk: it is kept, nothing is
lost, and nothing unscanned leaves.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import ipaddress
import logging
import os
import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.redact.delivery import DeliveryWorker
from gateway.redact.dsn import header_block
from gateway.redact.hold_queue import HoldQueue
from gateway.redact.mail_queue import QueuedMessage
from gateway.redact.outbound_audit import Action, AlertHook, OutboundAudit, OutboundRecord, alert, emit, one_line
from gateway.redact.sealed_files import new_id
from gateway.redact.settings import SmtpRelaySettings, resolve_secret

if TYPE_CHECKING:
    from gateway.redact.engine import Redactor

log = logging.getLogger(__name__)

NO_SPACE = "452 4.3.1 Insufficient system storage, try again later"
FIRST_ATTEMPT_WAIT = 10.0  # seconds the PMS waits for the first delivery attempt at most
BlockedHook = AlertHook

# ---------------------------------------------------------------- AUTH passwords

PBKDF2_PREFIX = "pbkdf2_sha256"


def hash_password(password: str, iterations: int = 200_000) -> str:
    """The stored form of an AUTH password for `auth_users` (salted PBKDF2-SHA256)."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{PBKDF2_PREFIX}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


# The PMS logs in on every connection; PBKDF2 is deliberately slow and AUTH runs in the
# gateway's loop, so a password already verified in this process is recognised by a keyed
# tag instead of being hashed again.
_PROCESS_KEY = os.urandom(32)
_verified: dict[str, bytes] = {}


def verify_password(password: bytes, stored: str) -> bool:
    """Check `password` against an `auth_users` entry: a hash or an `env:NAME` reference."""
    try:
        if stored.startswith("env:"):
            expected = (resolve_secret(stored) or "").encode()
            return bool(expected) and hmac.compare_digest(password, expected)
        tag = hmac.digest(_PROCESS_KEY, password, "sha256")
        if hmac.compare_digest(_verified.get(stored, b""), tag):
            return True
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != PBKDF2_PREFIX:
            raise ValueError("unknown hash scheme")
        actual = hashlib.pbkdf2_hmac("sha256", password, base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError, LookupError) as exc:
        log.error("auth_users entry unusable (neither a %s hash nor a set env:NAME): %s", PBKDF2_PREFIX, exc)
        return False
    if not hmac.compare_digest(actual, base64.b64decode(digest)):
        return False
    _verified[stored] = tag
    return True


def _authenticator(users: dict[str, str]):
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        stored = users.get(auth_data.login.decode("utf-8", "replace"))
        return AuthResult(success=stored is not None and verify_password(auth_data.password, stored), handled=False)

    return authenticate


# ---------------------------------------------------------------- the handler


class RelayHandler:
    """aiosmtpd handler: client filter at HELO/EHLO, redact-and-forward at DATA."""

    def __init__(
        self,
        settings: SmtpRelaySettings,
        redactor: Redactor | Callable[[], Redactor],
        audit: OutboundAudit | None = None,
        on_blocked: BlockedHook | None = None,
        channel: str | None = None,
        hold: HoldQueue | None = None,
        on_held: BlockedHook | None = None,
        *,
        delivery: DeliveryWorker,
    ) -> None:
        self.settings = settings
        self.delivery = delivery
        self.clock = delivery.clock  # queue times are the worker's
        self.hold = hold
        self.on_held = on_held
        # A callable lets a policy reload swap the redactor without restarting the listener.
        self._redactor = (lambda: redactor) if hasattr(redactor, "redact_email") else redactor
        self.audit = audit
        self.on_blocked = on_blocked
        self.channel = channel
        self.destination = f"{settings.smarthost.host}:{settings.smarthost.port}"

    # An open relay is never the default: clients outside allowed_clients cannot even
    # say HELO, and without HELO aiosmtpd refuses MAIL, RCPT and DATA.
    def _allowed(self, session: Session) -> bool:
        address = ipaddress.ip_address(str(session.peer[0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address in net for net in self.settings.allowed_clients):
            return True
        log.warning("SMTP relay refused client %s (not in allowed_clients)", address)
        return False

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        if not self._allowed(session):
            return "554 5.7.1 Relay access denied"
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        if not self._allowed(session):
            return ["554 5.7.1 Relay access denied"]
        session.host_name = hostname
        return responses

    def _disk_full(self, incoming: int = 0) -> bool:
        """Below the reserve (counting what is about to be written) nothing is accepted."""
        try:
            free = shutil.disk_usage(self.delivery.queue.directory.parent).free
        except OSError:
            return False  # the queue write itself will say what is wrong
        if free - incoming < self.settings.disk_reserve:
            log.warning("SMTP relay: less than smtp_relay.disk_reserve free in data_dir; answering 452")
            return True
        return False

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if await asyncio.to_thread(self._disk_full):
            return NO_SPACE
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or envelope.content  # type: ignore[assignment]
        message_id = message_id_of(raw)
        channel = self.channel or "mail"

        async def record(action: Action, reason: str | None, detectors: dict[str, int], size: int) -> OutboundRecord:
            rec = OutboundRecord(channel, self.destination, detectors, action, reason, message_id, size)
            await emit(self.audit, rec)
            return rec

        hops = _received_count(raw)
        if hops > self.settings.max_received_headers:
            log.warning("SMTP relay refused a message with %d Received headers (a mail loop?)", hops)
            await record("blocked", f"mail loop: {hops} Received headers", {}, len(raw))
            return "554 5.4.6 Too many hops (mail loop?)"
        if await asyncio.to_thread(self._disk_full, 2 * len(raw)):
            return NO_SPACE

        try:
            redactor = self._redactor()
            if self.channel is None and (rule := redactor.policy.smtp_channel()) is not None:
                channel = rule.name
            # Off the event loop: a large message must not stall the inbound proxy.
            outcome = await asyncio.to_thread(redactor.redact_email, raw)
        except Exception:
            # Fail closed but keep the message: the PMS retries once the fault is fixed.
            log.exception("redaction failed; message deferred")
            await record("deferred", "redaction failed", {}, len(raw))
            return "451 4.3.0 Redaction failed, try again later"

        if outcome.held and self.hold is not None:
            return await self._hold(raw, envelope, outcome.reason or "not fully parsed", record)

        if outcome.blocked:
            reason = _one_line(outcome.reason or "blocked by the notification policy")
            rec = await record("blocked", reason, outcome.counts(), len(raw))
            await alert(self.on_blocked, rec)
            return f"554 5.7.1 {reason}"

        now = self.clock()
        queue_id = new_id(now)
        data, message_id = _with_trace(outcome.data, message_id, queue_id, session, self.settings.hostname, now)
        queued = QueuedMessage.new(
            queue_id, now, data, _sender(envelope), envelope.rcpt_tos, envelope.mail_options,
            message_id=message_id, channel=channel, detectors=outcome.counts(),
        )
        try:
            await asyncio.to_thread(self.delivery.queue.put, queued)
        except Exception:
            # Not kept, so not accepted: the PMS keeps it and retries.
            log.exception("mail queue write failed; message deferred")
            await record("deferred", "mail queue unavailable", outcome.counts(), len(raw))
            return "451 4.3.0 Message could not be queued, try again later"
        refusal = await self.delivery.first_attempt(queue_id, FIRST_ATTEMPT_WAIT)
        if refusal is not None:
            return _one_line(refusal)
        return f"250 2.0.0 Queued as {queue_id} (redacted)"

    async def _hold(self, raw: bytes, envelope: Envelope, why: str,
                    record: Callable[..., Awaitable[OutboundRecord]]) -> str:
        """Keep the message on disk (fsynced) before answering; alert the operator."""
        assert self.hold is not None
        why = _one_line(why)
        try:
            held_id = await asyncio.to_thread(
                self.hold.put, raw, envelope.mail_from or "", list(envelope.rcpt_tos),
                list(envelope.mail_options), why,
            )
        except Exception:
            # Not kept, so not accepted: the PMS keeps it and retries.
            log.exception("hold queue write failed; message deferred")
            await record("deferred", "hold queue unavailable", {}, len(raw))
            return "451 4.3.0 Message could not be held, try again later"
        rec = await record("held", f"{why}; held as {held_id}", {}, len(raw))
        await alert(self.on_held, rec)
        return f"250 2.0.0 Held for operator review as {held_id}, not delivered"


def _one_line(text: str) -> str:
    return one_line(text) or "refused"


def _sender(envelope: Envelope) -> str:
    """The envelope sender; "" for the null sender `<>` (a bounce), however it was written."""
    sender = (envelope.mail_from or "").strip()
    return "" if sender.strip("<>") == "" else sender


def _received_count(raw: bytes) -> int:
    """How many relays the message has passed (its Received headers)."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block(raw))
    except Exception:  # noqa: BLE001 - unreadable headers count as none; redaction judges the rest
        return 0
    return len(headers.get_all("Received") or [])


def _with_trace(
    data: bytes, message_id: str | None, queue_id: str, session: Session, hostname: str, now: float
) -> tuple[bytes, str]:
    """Our Received header on top (so a loop back through us is counted), and a Message-ID
    when the PMS gave none: a copy sent twice (at-least-once) is then recognisable."""
    helo = _one_line(session.host_name or "unknown").replace(";", "")[:100]
    peer = str(session.peer[0]) if session.peer else "unknown"
    trace = (f"Received: from {helo} ([{peer}])\r\n\tby {hostname} (pms-gateway) with ESMTP id {queue_id};\r\n"
             f"\t{email.utils.formatdate(now)}\r\n")
    if message_id is None:
        message_id = f"<{queue_id}@{hostname}>"
        trace += f"Message-ID: {message_id}\r\n"
    return trace.encode("ascii", "replace") + data, message_id


def message_id_of(raw: bytes) -> str | None:
    """For the audit trail: lets an operator match a record to the PMS's own mail log."""
    try:
        value = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw).get("Message-ID")
    except Exception:  # noqa: BLE001 - a malformed header only loses the id
        return None
    return _one_line(str(value))[:200] if value else None


# ---------------------------------------------------------------- the listener


def _tls_context(settings: SmtpRelaySettings) -> ssl.SSLContext | None:
    if settings.starttls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.starttls_cert, settings.starttls_key)
    return context


class RelayServer:
    """The listening relay and its delivery worker: closing it stops both."""

    def __init__(self, server: asyncio.Server, delivery: DeliveryWorker) -> None:
        self.server = server
        self.delivery = delivery
        self.sockets = server.sockets

    def close(self) -> None:
        self.server.close()
        self.delivery.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()
        await self.delivery.stop()


async def start_smtp_relay(
    settings: SmtpRelaySettings,
    redactor: Redactor | Callable[[], Redactor],
    audit: OutboundAudit | None = None,
    on_blocked: BlockedHook | None = None,
    channel: str | None = None,
    hold: HoldQueue | None = None,
    on_held: BlockedHook | None = None,
    *,
    delivery: DeliveryWorker,
) -> RelayServer:
    """Listen on settings.listen_host:port in the running loop and start `delivery` (the
    queue's worker); close the returned server to stop both.

    `redactor` may be a zero-argument callable returning the current Redactor (policy
    reload); `channel` names the audit channel (default: the policy's smtp channel).
    `hold` keeps the messages that cannot be read whole (without it they are refused
    with 554); `on_held` alerts the operator about each. A smarthost that is this relay
    is refused (StartupRefused): it would be a mail loop.
    """
    from gateway.preflight import StartupRefused

    loop = asyncio.get_running_loop()
    if delivery.audit is None:
        delivery.audit = audit  # the trail records deliveries beside what the relay refused
    handler = RelayHandler(settings, redactor, audit, on_blocked, channel, hold, on_held, delivery=delivery)
    tls = _tls_context(settings)
    users = dict(settings.auth_users)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname=settings.hostname,
            ident="ESMTP",  # no software version in the greeting
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls,
            require_starttls=tls is not None and settings.require_starttls,
            auth_required=bool(users),
            auth_require_tls=True,
            authenticator=_authenticator(users) if users else None,
            loop=loop,
        )

    server = await loop.create_server(protocol, host=settings.listen_host, port=settings.port)
    try:
        if await _smarthost_is_self(settings, server):
            raise StartupRefused(
                f"smtp_relay.smarthost: {settings.smarthost.host}:{settings.smarthost.port} is this relay itself "
                "(a mail loop): set it to the mail server that delivers the hotel's mail"
            )
        await delivery.start()
    except BaseException:
        server.close()
        raise
    log.info("SMTP relay listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    return RelayServer(server, delivery)


async def _smarthost_is_self(settings: SmtpRelaySettings, server: asyncio.Server) -> bool:
    """True when the smarthost's addresses include one this relay listens on."""
    host = settings.smarthost
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host.host, host.port, type=socket.SOCK_STREAM)
    except OSError:
        return False  # unresolvable now: the delivery attempts will say so
    bound = [s.getsockname() for s in server.sockets]
    for *_, sockaddr in infos:
        target = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        for address, port, *_ in bound:
            if port != host.port:
                continue
            listening = ipaddress.ip_address(str(address).split("%")[0])
            if target == listening or (listening.is_unspecified and (target.is_loopback or _is_local(target))):
                return True
    return False


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address of this host: only those can be bound."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True
