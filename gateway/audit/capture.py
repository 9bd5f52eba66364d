"""From a finished exchange to a safe audit entry.

Two steps, split on purpose: `entry_from_exchange` runs in the `done` hook and only copies
attributes (no parsing, no I/O, so the request path stays cheap); `EntryPreparer` runs in
the writer before anything is persisted, and is where secrets are removed: query values
are dropped (or kept per policy, but never for parameters whose name says secret), and
business identifiers are extracted from the path. The request body, cookies and headers
are never read at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from gateway.audit.entry import AuditEntry
from gateway.audit.path_secrets import (
    QUERY_SEPARATORS,
    compile_path_secrets,
    hash_path_secrets,
    query_secret_names,
    secret_digest,
)
from gateway.policy.schema import Policy
from gateway.proxy.exchange import Exchange
from gateway.readers.credentials import canonical_name
from gateway.risk.geoip import GeoLocator
from gateway.sessions.model import device_label

MAX_QUERY_CHARS = 2000
MAX_IDENTIFIER_CHARS = 200
SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|otp|code|cookie|sess|sid|auth|key|sig|pin|cvv|cvc|card|iban", re.I
)
"""Query parameters whose values are never kept, even with `query_values: keep`."""
REDACTED = "[redacted]"
AREA_NOTE = "area"
"""`Exchange.notes` key: the public area or API client a request was judged as (recorded in `extra`)."""


def entry_from_exchange(ex: Exchange) -> AuditEntry:
    upstream = ex.upstream_seconds
    return AuditEntry(
        request_id=ex.request_id,
        at=ex.wall_time,
        decision=ex.decision,
        user=ex.user,
        session_hash=ex.session_hash,
        device_id=device_label(ex.device_id),
        client_ip=ex.client_ip,
        method=ex.request.method,
        path=ex.path.path,
        query=ex.query or None,
        status=ex.status or None,
        bytes_in=ex.bytes_in,
        bytes_out=ex.bytes_out,
        duration_ms=(time.perf_counter() - ex.started) * 1000.0,
        upstream_ms=None if upstream is None else upstream * 1000.0,
        reason=ex.reason,
        extra={"area": area} if (area := ex.notes.get(AREA_NOTE)) is not None else {},
    )


def scrub_query(
    raw: str | None,
    *,
    keep_values: bool,
    secret_names: frozenset[str] = frozenset(),
    link_secrets: frozenset[str] = frozenset(),
) -> str | None:
    """`a=1&b=2` -> `a&b` (drop) or `a=1&b=2` with secret-looking values replaced (keep):
    by a digest for the link secrets `audit.query_secrets` names (folded, see
    `query_secret_names`), by `[redacted]` for other secret-looking names."""
    if not raw:
        return None
    parts: list[str] = []
    for item in QUERY_SEPARATORS.split(raw):
        if not item:
            continue
        name, has_value, value = item.partition("=")
        name = unquote_plus(name)
        folded = canonical_name(name)  # as the credential reader folds it: `pa%00ss`, fullwidth, case
        if not keep_values or not has_value:
            parts.append(name)
        elif folded in link_secrets:
            parts.append(f"{name}={secret_digest(unquote_plus(value))}")
        elif SECRET_PARAMETER.search(folded) or folded in secret_names:
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(f"{name}={unquote_plus(value)}")
    text = "&".join(parts)
    return text[:MAX_QUERY_CHARS] or None


def extract_identifiers(path: str | None, patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> dict[str, str]:
    """{name: first capture} for every identifier pattern matching the canonical path."""
    if not path or not patterns:
        return {}
    found: dict[str, str] = {}
    for name, pattern in patterns:
        match = pattern.search(path)
        if match is None:
            continue
        value = match.group(1) if match.re.groups else match.group(0)
        if value:
            found[name] = value[:MAX_IDENTIFIER_CHARS]
    return found


@dataclass(frozen=True, slots=True)
class _Rules:
    """What the preparer needs from one policy, compiled once per policy (reload)."""

    keep_values: bool
    secret_names: frozenset[str]
    link_secrets: frozenset[str]
    identifiers: tuple[tuple[str, re.Pattern[str]], ...]
    path_secrets: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, policy: Policy) -> _Rules:
        return cls(
            keep_values=policy.audit.query_values == "keep",
            secret_names=frozenset({policy.login.password_field.lower(), policy.login.username_field.lower()}),
            link_secrets=query_secret_names(policy.audit.query_secrets),
            identifiers=tuple((name, re.compile(p)) for name, p in policy.audit.identifiers.items()),
            path_secrets=compile_path_secrets(policy.audit.path_secrets),
        )


class EntryPreparer:
    """Scrubs and enriches raw entries with the policy in force when they are written."""

    def __init__(self, policy: Callable[[], Policy], geo: GeoLocator | None) -> None:
        self._policy = policy
        self._geo = geo
        self._rules: tuple[Policy | None, _Rules | None] = (None, None)

    def _current(self) -> _Rules:
        policy = self._policy()
        if self._rules[0] is not policy:
            self._rules = (policy, _Rules.of(policy))
        return self._rules[1]  # type: ignore[return-value]

    def __call__(self, entry: AuditEntry) -> AuditEntry:
        if entry.prepared:
            return entry
        rules = self._current()
        if entry.query:
            entry.query = scrub_query(entry.query, keep_values=rules.keep_values, secret_names=rules.secret_names,
                                      link_secrets=rules.link_secrets)
        if entry.channel == "http":
            entry.path = hash_path_secrets(entry.path, rules.path_secrets)  # before identifiers are read
            entry.identifiers = extract_identifiers(entry.path, rules.identifiers)
        if self._geo is not None and entry.client_ip and entry.country is None:
            info = self._geo.lookup(entry.client_ip)
            entry.country, entry.city, entry.asn = info.country, info.city, info.asn
        entry.duration_ms = round(entry.duration_ms, 3)
        if entry.upstream_ms is not None:
            entry.upstream_ms = round(entry.upstream_ms, 3)
        entry.prepared = True
        return entry
