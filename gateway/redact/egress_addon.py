"""mitmproxy addon: redact guest data in the requests the PMS sends to SMS/e-mail APIs.

Each request is matched to a channel of the policy (`notifications.channels`) by its
destination host and its canonical path (`gateway.proxy.canonical`, the reader the
inbound side uses: one decoding, dot segments and `//` resolved; ambiguous spellings such
as `;x=1` or `%2F` are refused with 400), case-insensitively; the canonical path is what
is forwarded. The matched request's body, query string and non-standard headers are
rewritten by the Redactor before mitmproxy forwards it. A request matching no channel is
refused when its host has a channel (`unmatched_channel_host`, default block), else
passes or is refused per `unmatched_egress`.
Everything that could carry a body past this hook (raw TCP, WebSocket, HTTP/3) is turned
off by `gateway.redact.egress`, which runs this addon in a process of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, http

from gateway.proxy.canonical import AmbiguousPath, canonicalize
from gateway.redact.engine import Redactor
from gateway.redact.formats.base import drops_field
from gateway.redact.outbound_audit import Action, OutboundAudit, OutboundRecord, emit
from gateway.redact.outcome import Outcome
from gateway.redact.policy import ChannelRule, NotificationsPolicy

log = logging.getLogger(__name__)

_RECORD = "gateway_outbound"  # flow.metadata key: what to audit once the outcome is known

# Request headers whose values are protocol, not message content: every other header
# (X-Customer-Name, a provider's X-Message-Note...) is scanned like a field.
STANDARD_HEADERS: frozenset[str] = frozenset((
    "accept", "accept-charset", "accept-encoding", "accept-language", "authorization",
    "cache-control", "connection", "content-encoding", "content-length", "content-type",
    "cookie", "date", "expect", "host", "if-match", "if-modified-since", "if-none-match",
    "if-unmodified-since", "keep-alive", "pragma", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
))  # fmt: skip


def load_notifications(paths: Sequence[str]) -> NotificationsPolicy:
    """The `notifications:` section of the policy files, read as the gateway reads them
    (merged in order, errors naming file and line)."""
    from gateway.policy.loader import load_policy

    return load_policy(*paths).notifications


class RedactionAddon:
    """Matches each outbound request to a channel and redacts its body (and query)."""

    def __init__(
        self, redactor: Redactor | None = None, audit: OutboundAudit | None = None, hash_key: bytes = b""
    ) -> None:
        self.redactor = redactor
        self.audit = audit
        self.hash_key = hash_key

    def load(self, loader) -> None:
        loader.add_option(
            "redact_policy", Sequence[str], [], "Policy files (or directories); their notifications: section applies."
        )

    def configure(self, updated: set[str]) -> None:
        if "redact_policy" in updated and ctx.options.redact_policy:
            try:
                self.redactor = Redactor(load_notifications(ctx.options.redact_policy), self.hash_key)
            except Exception as exc:
                raise exceptions.OptionsError(f"redact_policy: {exc}") from exc

    def reload(self) -> None:
        """Re-read the policy file; a bad file is logged and the last good policy kept."""
        if not ctx.options.redact_policy:
            return
        try:
            self.redactor = Redactor(load_notifications(ctx.options.redact_policy), self.hash_key)
            log.info("egress policy reloaded from %s", ctx.options.redact_policy)
        except Exception as exc:
            log.error("egress policy reload failed, keeping the last good one: %s", exc)

    # ------------------------------------------------------------------ hooks

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        """Refuse a tunnel to a host no channel names when unmatched egress is blocked."""
        if self.redactor is None:
            return  # `request` refuses every request inside the tunnel
        policy = self.redactor.policy
        if policy.unmatched_egress == "block" and not policy.names_host(flow.request.host):
            await self._refuse(flow, None, 403, "destination not allowed by the notification policy")

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # answered by an earlier hook
            return
        try:
            await self._inspect(flow)
        except Exception:
            # mitmproxy would log an addon error and forward the request as it is: never.
            log.exception("egress redaction failed")
            await self._refuse(flow, None, 503, "redaction failed, try again later", action="deferred")

    async def _inspect(self, flow: http.HTTPFlow) -> None:
        if self.redactor is None:
            raise RuntimeError("no notification policy loaded")
        policy = self.redactor.policy
        req = flow.request
        raw_path, sep, query = req.path.partition("?")
        try:
            canonical = canonicalize(raw_path)
        except AmbiguousPath as exc:
            if policy.names_host(req.host) or policy.unmatched_egress == "block":
                await self._refuse(flow, None, 400, f"ambiguous request path: {exc}")
            else:
                flow.metadata[_RECORD] = ("unmatched", {})
            return
        rule = policy.channel_for(req.host, canonical.path)
        if rule is None:
            if policy.unmatched_action(req.host) == "block":
                await self._refuse(flow, None, 403, "destination not allowed by the notification policy")
            else:
                flow.metadata[_RECORD] = ("unmatched", {})
            return
        # The provider gets the path the channel matched, not a spelling of it.
        req.path = canonical.encoded + sep + query
        if req.headers.get("upgrade"):
            # A WebSocket or h2c upgrade would carry data this hook never sees.
            await self._refuse(flow, rule, 403, "protocol upgrade not allowed on a notification channel")
            return
        outcome = self._redact(flow, rule)
        if outcome.blocked:
            await self._refuse(flow, rule, 451, outcome.reason or "blocked by the notification policy", outcome)
            return
        flow.metadata[_RECORD] = (rule.name, outcome.counts())

    async def response(self, flow: http.HTTPFlow) -> None:
        if (pending := flow.metadata.pop(_RECORD, None)) is not None:
            channel, counts = pending
            status = flow.response.status_code if flow.response else 0
            reason = None if status < 400 else f"provider answered {status}"
            await self._record(flow, channel, counts, "forwarded", reason)

    async def error(self, flow: http.HTTPFlow) -> None:
        if (pending := flow.metadata.pop(_RECORD, None)) is not None:
            channel, counts = pending
            await self._record(flow, channel, counts, "deferred", "provider unreachable")

    # ------------------------------------------------------------------ helpers

    def _redact(self, flow: http.HTTPFlow, rule: ChannelRule) -> Outcome:
        """Redact the decoded body, the query string (read as a form, whatever the
        channel's format) and every non-standard header."""
        assert self.redactor is not None
        req = flow.request
        # `.content` is decoded from Content-Encoding (raises on an unknown one: fail closed);
        # assigning it re-encodes and fixes Content-Length.
        outcome = self.redactor.redact_http_body(req.content or b"", req.headers.get("content-type"), rule)
        if outcome.blocked:
            return outcome
        req.content = outcome.data
        path, _, query = req.path.partition("?")
        if query:
            q = self.redactor.redact_http_query(query.encode("utf-8", "surrogateescape"), rule)
            if q.blocked:
                return q
            req.path = path + "?" + q.data.decode("ascii", "replace")
            outcome = Outcome(outcome.data, outcome.findings + q.findings)
        return self._redact_headers(req, outcome)

    def _redact_headers(self, req: http.Request, outcome: Outcome) -> Outcome:
        """Scan non-standard headers: values are redacted in place (a `drop` removes the
        header); guest data in a header name cannot be redacted, so it blocks."""
        assert self.redactor is not None
        findings = list(outcome.findings)
        for name in {n.lower() for n in req.headers.keys()} - STANDARD_HEADERS:
            _, found = self.redactor.redact_text(name)
            if found:
                return Outcome(outcome.data, findings + found, blocked=True, reason="guest data in a header name")
            values: list[str] = []
            old = req.headers.get_all(name)
            for value in old:
                new, found = self.redactor.redact_text(value)
                findings.extend(found)
                if not drops_field(found):
                    values.append(new)
            if values != old:
                req.headers.set_all(name, values)
        blocking = sorted({f.detector for f in findings if f.action == "block"})
        if blocking:
            reason = f"policy blocks messages containing: {', '.join(blocking)}"
            return Outcome(outcome.data, findings, blocked=True, reason=reason)
        return Outcome(outcome.data, findings)

    async def _refuse(
        self,
        flow: http.HTTPFlow,
        rule: ChannelRule | None,
        status: int,
        reason: str,
        outcome: Outcome | None = None,
        action: Action = "blocked",
    ) -> None:
        body = {"error": "blocked" if action == "blocked" else "unavailable", "reason": reason}
        flow.response = http.Response.make(status, json.dumps(body).encode(), {"Content-Type": "application/json"})
        counts = outcome.counts() if outcome else {}
        await self._record(flow, rule.name if rule else "unmatched", counts, action, reason)

    async def _record(
        self, flow: http.HTTPFlow, channel: str, counts: dict[str, int], action: Action, reason: str | None
    ) -> None:
        size = len(flow.request.raw_content or b"")
        await emit(self.audit, OutboundRecord(channel, flow.request.host, counts, action, reason, None, size))

