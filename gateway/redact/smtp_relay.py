"""SMTP relay: the PMS sends its mail here; guest data is redacted before the smarthost.

It runs in the gateway's own event loop (`loop.create_server`, no aiosmtpd Controller
thread) with a handler of our own: aiosmtpd's bundled Proxy handler delivers with a
blocking smtplib call and answers 250 even when the smarthost refused. Here the PMS gets
250 only once the smarthost accepted the redacted message, 451 when it should try again
later (smarthost down or busy, nothing lost, nothing sent unredacted), the smarthost's own
5xx when it refused for good, and 554 when the policy blocks the message (permanent, so
the PMS does not retry it forever).

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
import hashlib
import hmac
import inspect
import ipaddress
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.redact.hold_queue import HoldQueue
from gateway.redact.outbound_audit import Action, OutboundAudit, OutboundRecord, emit
from gateway.redact.settings import SmtpRelaySettings, resolve_secret

if TYPE_CHECKING:
    from gateway.redact.engine import Redactor

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.4.1 Smarthost unavailable, try again later"
BlockedHook = Callable[[OutboundRecord], Awaitable[None] | None]

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
    ) -> None:
        self.settings = settings
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

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or envelope.content  # type: ignore[assignment]
        message_id = _message_id(raw)
        channel = self.channel or "mail"

        async def record(action: Action, reason: str | None, detectors: dict[str, int], size: int) -> OutboundRecord:
            rec = OutboundRecord(channel, self.destination, detectors, action, reason, message_id, size)
            await emit(self.audit, rec)
            return rec

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
            await _notify(self.on_blocked, rec)
            return f"554 5.7.1 {reason}"

        reply, action, reason = await deliver(
            self.settings, outcome.data, envelope.mail_from or "", envelope.rcpt_tos, envelope.mail_options
        )
        await record(action, reason, outcome.counts(), len(outcome.data))
        return reply

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
        await _notify(self.on_held, rec)
        return f"250 2.0.0 Held for operator review as {held_id}, not delivered"


async def deliver(
    settings: SmtpRelaySettings, data: bytes, mail_from: str, rcpt_tos: list[str], mail_options: list[str]
) -> tuple[str, Action, str | None]:
    """Deliver redacted `data` to the smarthost; map its answer to ours (reply, action, reason)."""
    host = settings.smarthost
    try:
        errors, _ = await aiosmtplib.send(
            data,
            sender=mail_from,
            recipients=rcpt_tos,
            # SIZE is stale after redaction; the rest describes the content.
            mail_options=[o for o in mail_options if o.upper().startswith(("BODY=", "SMTPUTF8"))],
            hostname=host.host,
            port=host.port,
            username=host.username,
            password=resolve_secret(host.password),
            use_tls=host.use_tls,
            start_tls=host.start_tls,
            cert_bundle=host.ca_file,
            timeout=host.timeout,
            local_hostname=settings.hostname,
        )
    except Exception as exc:  # noqa: BLE001 - every failure maps to an SMTP answer
        return _failure_answer(exc)
    reason = f"{len(errors)} recipient(s) refused by the smarthost" if errors else None
    return "250 2.0.0 OK: redacted and relayed", "forwarded", reason


async def _notify(hook: BlockedHook | None, rec: OutboundRecord) -> None:
    """Call an alert hook; its failure is logged, never the sender's problem."""
    if hook is None:
        return
    try:
        result = hook(rec)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("outbound alert hook failed")


def _failure_answer(exc: Exception) -> tuple[str, Action, str]:
    """A permanent refusal of this message passes through; anything else is temporary.

    Refusals about the relay itself (HELO, AUTH at the smarthost) are temporary too: they
    are fixed by the operator, and the PMS must not drop the message meanwhile.
    """
    refusal: aiosmtplib.SMTPResponseException | None = None
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        if all(500 <= r.code < 600 for r in exc.recipients):
            refusal = exc.recipients[0]
    elif isinstance(exc, (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)) and 500 <= exc.code < 600:
        refusal = exc
    if refusal is not None:
        # The smarthost's text may quote an address: it goes to the sender, not the audit.
        return f"{refusal.code} {_one_line(refusal.message)}", "refused", f"smarthost refused ({refusal.code})"
    what = type(exc).__name__ + (f" {exc.code}" if isinstance(exc, aiosmtplib.SMTPResponseException) else "")
    log.warning("smarthost failed (%s); message deferred", what)
    return TEMPFAIL, "deferred", f"smarthost unavailable ({what})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400] or "refused"


def _message_id(raw: bytes) -> str | None:
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


async def start_smtp_relay(
    settings: SmtpRelaySettings,
    redactor: Redactor | Callable[[], Redactor],
    audit: OutboundAudit | None = None,
    on_blocked: BlockedHook | None = None,
    channel: str | None = None,
    hold: HoldQueue | None = None,
    on_held: BlockedHook | None = None,
) -> asyncio.Server:
    """Listen on settings.listen_host:port in the running loop; close the server to stop.

    `redactor` may be a zero-argument callable returning the current Redactor (policy
    reload); `channel` names the audit channel (default: the policy's smtp channel).
    `hold` keeps the messages that cannot be read whole (without it they are refused
    with 554); `on_held` alerts the operator about each.
    """
    loop = asyncio.get_running_loop()
    handler = RelayHandler(settings, redactor, audit, on_blocked, channel, hold, on_held)
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
    log.info("SMTP relay listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    return server
