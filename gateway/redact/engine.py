"""The redaction engine: finds guest data in outbound notifications and rewrites it.

Callers (the SMTP relay, the egress proxy addon, the `redact` command) hold one
`Redactor` per policy and call it per message. The work is split three ways:
detectors find spans (`detectors`), operators decide what replaces them
(`operators`), and format modules know where text lives in an e-mail or an HTTP body
(`formats`). This module wires them together and applies the two rules that concern a
whole message: a `block` action refuses it, and strict mode scans the redacted output
once more and refuses it if anything is still found.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from gateway.redact.detectors import Candidate, DetectorSet
from gateway.redact.formats.base import Edit, Plan, Rewrite, Rewritten
from gateway.redact.formats.bodies import BodyDocument, parse_body, parse_query
from gateway.redact.detectors.invisible import VisibleText
from gateway.redact.formats.html import rewrite_html, visible_text
from gateway.redact.formats.mime import CHECKSUMMED, MailDocument, NotFullyParsed
from gateway.redact.names import names_in_text
from gateway.redact.operators import Operators
from gateway.redact.outcome import Finding, Outcome
from gateway.redact.policy import ActionSpec, ChannelRule, NotificationsPolicy


_MAX_PASSES = 4
_MARKUP = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*[\s/>]|!--|/[a-zA-Z])")


class Redactor:
    """Applies one `NotificationsPolicy` to texts, e-mails and HTTP bodies.

    Thread-safe and reusable: it holds only compiled patterns and the hash key.
    """

    def __init__(self, policy: NotificationsPolicy, hash_key: bytes = b"") -> None:
        self.policy = policy
        enabled = policy.enabled()
        self._detectors = DetectorSet(policy)
        self._operators = Operators({d: policy.action(d) for d in enabled}, ActionSpec(), hash_key)
        self._names_enabled = "name" in enabled
        self._block_leftovers = policy.strict is not None and policy.strict.leftover == "block"

    # -- plain text ------------------------------------------------------------------

    def scan(self, text: str, names: Iterable[str] = ()) -> list[Candidate]:
        """What the detectors find in `text`, without rewriting it (used by the bench)."""
        return self._detectors.find(text, self.known_names([text], names))

    def redact_text(self, text: str, names: Iterable[str] = ()) -> tuple[str, list[Finding]]:
        """Redact plain text; `names` are guest names known from elsewhere."""
        return self._rewrite_text("body", text, self.known_names([text], names))

    def known_names(self, texts: Iterable[str], given: Iterable[str] = ()) -> list[str]:
        """Guest names for one message: given ones plus those its texts announce."""
        names = [n for n in given if n and n.strip()]
        if self._names_enabled:
            for text in texts:
                names.extend(names_in_text(text))
        return list(dict.fromkeys(names))

    def _document_names(self, document: BodyDocument) -> list[str]:
        """Names of an HTTP body: its name fields, recipients' display names, and what
        its texts announce, HTML read as a reader sees it and embedded mails opened."""
        given = list(document.names())
        texts: list[str] = []
        for location, text in document.texts():
            if location.startswith("mime:"):
                mail = MailDocument(_decode_mime(text))
                given.extend(mail.names())
                texts.extend(t for _, t in mail.texts())
            elif location.startswith("html:") and _looks_like_html(text):
                texts.append(visible_text(text))
            else:
                texts.append(text)
        return self.known_names(texts, given)

    def _rewrite_text(self, location: str, text: str,
                      names: Sequence[str]) -> tuple[str, list[Finding]]:
        """Rewrite until nothing more changes, so that redacting twice equals once.

        A replacement can form something new with its neighbours (the visible last four
        digits of a masked card and the digits after it); a further pass catches that.
        Findings of further passes index the text as the previous pass left it.
        """
        current, findings = self._rewrite_once(location, text, names)
        for _ in range(_MAX_PASSES - 1):
            if not findings or current == text:
                break
            text = current
            current, more = self._rewrite_once(location, text, names)
            if current == text:
                break
            findings += more
        return current, findings

    def _rewrite_once(self, location: str, text: str,
                      names: Sequence[str]) -> tuple[str, list[Finding]]:
        edits = self._plan(location, text, names)
        if not edits:
            return text, []
        pieces: list[str] = []
        position = 0
        for edit in edits:
            pieces.append(text[position : edit.start])
            pieces.append(edit.replacement)
            position = edit.end
        pieces.append(text[position:])
        return "".join(pieces), [edit.finding for edit in edits]

    def _plan(self, location: str, text: str, names: Sequence[str]) -> list[Edit]:
        """What one pass would replace, and with what."""
        edits = []
        for candidate in self._detectors.find(text, names):
            value = text[candidate.start : candidate.end]
            operator = self._operators.spec(candidate.detector).operator
            finding = Finding(candidate.detector, candidate.start, candidate.end, operator, location)
            replacement = self._operators.replace(candidate.detector, value)
            edits.append(Edit(candidate.start, candidate.end, replacement, finding))
        return edits

    def rewriter(self, names: Sequence[str]) -> Rewrite:
        """The text rewrite for one message whose guest names are `names`.

        Locations say how a field is read (`gateway.redact.formats.fields`): `html:` values
        as a reader sees them, `mime:` values as a whole base64 e-mail, others as text.
        """

        def rewrite(location: str, text: str) -> tuple[str, list[Finding]]:
            return self._rewrite_text(location, text, names)

        plan = self.planner(names)

        def dispatch(location: str, text: str) -> tuple[str, list[Finding]]:
            if location.startswith("html:") and _looks_like_html(text):
                return rewrite_html(text, location, rewrite, plan)
            if location.startswith("mime:"):
                return self._rewrite_mime(location, text, names)
            return rewrite(location, text)

        return dispatch

    def _rewrite_mime(self, location: str, text: str,
                      names: Sequence[str]) -> tuple[str, list[Finding]]:
        """A base64 e-mail inside an API body (SES raw): redacted as the relay would."""
        raw = _decode_mime(text)
        document = MailDocument(raw)
        names = self.known_names((t for _, t in document.texts()), [*names, *document.names()])
        result = document.rewrite(self.rewriter(names), self.planner(names),
                                  self._display_name_action(), self.policy.attachments,
                                  self._checksummed)
        findings = [replace(f, location=f"{location}/{f.location}") for f in result.findings]
        if result.data == raw:
            return text, findings
        return base64.b64encode(result.data).decode("ascii"), findings

    def planner(self, names: Sequence[str]) -> Plan:
        """Like `rewriter`, but returns the edits (for text spread over HTML nodes)."""

        def plan(location: str, text: str) -> list[Edit]:
            return self._plan(location, text, names)

        return plan

    # -- whole messages --------------------------------------------------------------

    def redact_email(self, raw: bytes) -> Outcome:
        """Redact a complete RFC 5322 message (headers, MIME parts, attachments)."""
        try:
            document = MailDocument(raw)
            names = self.known_names((t for _, t in document.texts()), document.names())
            rewrite, plan = self.rewriter(names), self.planner(names)
            result = document.rewrite(
                rewrite, plan, self._display_name_action(), self.policy.attachments, self._checksummed
            )
            return self._conclude(
                result, lambda data: MailDocument(data).rewrite(rewrite, plan, None, "keep")
            )
        except NotFullyParsed as exc:
            return _held(str(exc))
        except Exception as exc:  # noqa: BLE001 - fail closed: never pass what we cannot read
            return _held(f"message could not be parsed for redaction ({type(exc).__name__})")

    def _checksummed(self, text: str) -> bool:
        """Whether a card or IBAN (checksummed: few false alarms in binary data) is in `text`."""
        visible = VisibleText(text).text
        return any(
            True for d in self._detectors.detectors if d.name in CHECKSUMMED for _ in d.find(visible, ())
        )

    def redact_http_body(
        self, body: bytes, content_type: str | None, channel: ChannelRule
    ) -> Outcome:
        """Redact a provider API request body according to its channel rule."""
        return self._redact_document(body, lambda data: parse_body(data, content_type, channel))

    def redact_http_query(self, query: bytes, channel: ChannelRule) -> Outcome:
        """Redact a provider API request's query string (read as a form, any channel)."""
        return self._redact_document(query, lambda data: parse_query(data, channel))

    def _redact_document(self, data: bytes, parse: Callable[[bytes], BodyDocument]) -> Outcome:
        try:
            document = parse(data)
            names = self._document_names(document)
            result = document.rewrite(self.rewriter(names), self.policy.attachments)

            def rescan(data: bytes) -> Rewritten:
                return parse(data).rewrite(self.rewriter(names), "keep")

            return self._conclude(result, rescan)
        except Exception as exc:  # noqa: BLE001 - fail closed, as above
            return _unreadable(exc)

    def _display_name_action(self) -> str | None:
        """What happens to recipient display names in To/Cc (None: left alone)."""
        if not self._names_enabled:
            return None
        return self._operators.spec("name").operator

    def _conclude(self, result: Rewritten, rescan: Callable[[bytes], Rewritten]) -> Outcome:
        """Apply the message-level rules: `block` actions, then the strict leftover scan."""
        blocking = _detectors_of(f for f in result.findings if f.action == "block")
        if blocking:
            return Outcome(
                data=result.data,
                findings=result.findings,
                blocked=True,
                reason=f"policy blocks messages containing: {blocking}",
            )
        if self._block_leftovers:
            leftovers = [f for f in rescan(result.data).findings if f.action != "keep"]
            if leftovers:
                return Outcome(
                    data=result.data,
                    findings=result.findings,
                    blocked=True,
                    reason=f"strict mode: still found after redaction: {_detectors_of(leftovers)}",
                )
        return Outcome(data=result.data, findings=result.findings)


def _looks_like_html(text: str) -> bool:
    """Whether a field declared as HTML holds markup (SendGrid's `content[].value` is
    plain text or HTML, by a sibling `type`)."""
    return _MARKUP.search(text) is not None


def _decode_mime(text: str) -> bytes:
    """The e-mail in a base64 field; anything else is unreadable (the body is refused)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise NotFullyParsed(f"MIME field is not base64 ({exc})") from None


def _detectors_of(findings: Iterable[Finding]) -> str:
    """'card, phone': detector names only, never values."""
    return ", ".join(sorted({f.detector for f in findings}))


def _held(reason: str) -> Outcome:
    """A message that cannot be read whole: never sent; the relay holds it."""
    return Outcome(data=b"", blocked=True, held=True, reason=reason)


def _unreadable(exc: Exception) -> Outcome:
    return Outcome(
        data=b"",
        blocked=True,
        reason=f"message could not be parsed for redaction ({type(exc).__name__})",
    )
