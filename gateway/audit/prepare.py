"""Scrubbing and enriching an audit entry before it is persisted.

The writer runs this, in the gateway process or in the audit writer process, before an
entry reaches the spool or the chain: query values are dropped (or kept per policy, but
never for parameters whose name says secret), secret parts of paths are digested, and
business identifiers are extracted from the path. No web imports here, so the writer
process can run it without loading the proxy; the rules travel there as `PrepareRules`
(plain values and compiled patterns, picklable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from gateway.audit.entry import AuditEntry
from gateway.audit.path_secrets import (
    QUERY_SEPARATORS,
    compile_path_secrets,
    hash_path_secrets,
    query_secret_names,
    secret_digest,
)
from gateway.readers.field_names import canonical_name
from gateway.risk.geoip import GeoLocator

if TYPE_CHECKING:  # the writer process never loads the policy schema
    from gateway.policy.schema import Policy

MAX_QUERY_CHARS = 2000
MAX_IDENTIFIER_CHARS = 200
SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|otp|code|cookie|sess|sid|auth|key|sig|pin|cvv|cvc|card|iban", re.I
)
"""Query parameters whose values are never kept, even with `query_values: keep`."""
REDACTED = "[redacted]"


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
class PrepareRules:
    """What the preparer needs from one policy, compiled once per policy (reload); plain
    values and compiled patterns, so they can be sent to the writer process."""

    keep_values: bool
    secret_names: frozenset[str]
    link_secrets: frozenset[str]
    identifiers: tuple[tuple[str, re.Pattern[str]], ...]
    path_secrets: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, policy: Policy) -> PrepareRules:
        return cls(
            keep_values=policy.audit.query_values == "keep",
            secret_names=frozenset({policy.login.password_field.lower(), policy.login.username_field.lower()}),
            link_secrets=query_secret_names(policy.audit.query_secrets),
            identifiers=tuple((name, re.compile(p)) for name, p in policy.audit.identifiers.items()),
            path_secrets=compile_path_secrets(policy.audit.path_secrets),
        )


def rules_from_policy(policy: Callable[[], Policy]) -> Callable[[], PrepareRules]:
    """The rules of the policy in force, recompiled only when the policy changes (asked
    for every batch, and by the writer process link for every record it forwards)."""
    cache: list[object] = [None, None]

    def current() -> PrepareRules:
        now = policy()
        if now is not cache[0]:
            cache[:] = [now, PrepareRules.of(now)]
        return cache[1]  # type: ignore[return-value]

    return current


class RulesPreparer:
    """Scrubs and enriches raw entries with the rules in force when they are written."""

    def __init__(self, rules: Callable[[], PrepareRules], geo: GeoLocator | None) -> None:
        self._rules = rules
        self._geo = geo

    def __call__(self, entry: AuditEntry) -> AuditEntry:
        if entry.prepared:
            return entry
        rules = self._rules()
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


class EntryPreparer(RulesPreparer):
    """The preparer of the in-process writer: rules from the live policy."""

    def __init__(self, policy: Callable[[], Policy], geo: GeoLocator | None) -> None:
        super().__init__(rules_from_policy(policy), geo)
