"""Secrets inside paths (reset links, guest order links) never reach the audit trail in clear.

A PMS puts secrets in URLs it mails out: `/reset/<token>`, `/guest/order/<code>/<secret>`.
The audit trail records every path, so the policy names the path patterns whose parts are
secret (`audit.path_secrets`: each capture group of a pattern is a secret part) and this
module replaces each captured part by a short digest. The same link always gives the same
digest, so an investigator can still follow one link across records (who opened the reset
link, from where, how often) without being able to use it.

Links also carry secrets in their query string (`/reset?token=...`, `/order?key=...`):
`audit.query_secrets` names those parameters, and with `audit.query_values: keep` their
values are recorded as the same digest (the token of `/reset/<t>` and of `/reset?token=<t>`
digest alike). Names are folded as the credential reader folds them (`TOKEN`, fullwidth),
so no spelling keeps a value in clear.

One function, used by the audit preparer for every record (staff requests, reset forms,
public guest areas alike), and by every log line that names a path (`path_for_logs`), so
no feature hashes links its own way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from gateway.readers.field_names import canonical_name

DIGEST_PREFIX = "~"  # never produced by canonical PMS paths' secrets alone, easy to grep for
_PERSON = b"pgw-path-secret"
QUERY_SEPARATORS = re.compile(r"[&;]")  # `;` too: the credential reader and some servers split on it


def secret_digest(secret: str) -> str:
    """`~` and 16 hex digits: enough to tell links apart, nothing to open one with."""
    digest = hashlib.blake2b(secret.encode(), digest_size=8, person=_PERSON).hexdigest()
    return DIGEST_PREFIX + digest


def compile_path_secrets(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def hash_path_secrets(path: str | None, patterns: tuple[re.Pattern[str], ...]) -> str | None:
    """`path` with every capture group of every matching pattern replaced by its digest.

    A pattern without groups hides its whole match. Patterns apply one after another, each
    to the result of the previous, so overlapping patterns cannot bring a secret back.
    """
    if not path or not patterns:
        return path
    for pattern in patterns:
        path = pattern.sub(_replace_groups, path)
    return path


def query_secret_names(names: Iterable[str]) -> frozenset[str]:
    """`audit.query_secrets` folded once, as `is_query_secret` compares them."""
    return frozenset(canonical_name(name) for name in names)


def is_query_secret(name: str, folded_secrets: frozenset[str]) -> bool:
    """Whether a (percent-decoded) query parameter name is one `audit.query_secrets` names."""
    return canonical_name(name) in folded_secrets


def hash_query_secrets(query: str, folded_secrets: frozenset[str]) -> str:
    """`query` with the value of every named secret parameter replaced by its digest; the
    rest as sent. Values are digested decoded, so `a%2Bb` and `a+b` spellings agree."""
    if not query or not folded_secrets:
        return query
    parts: list[str] = []
    for item in QUERY_SEPARATORS.split(query):
        name, has_value, value = item.partition("=")
        if has_value and value and is_query_secret(unquote_plus(name), folded_secrets):
            item = f"{name}={secret_digest(unquote_plus(value))}"
        parts.append(item)
    return "&".join(parts)


def path_for_logs(path: str, patterns: Iterable[str], query_secrets: Iterable[str] = ()) -> str:
    """`path` (with its query, if any) as a log line may show it: the policy's
    `audit.path_secrets` (its patterns as written) and `audit.query_secrets` digested exactly
    as in the audit trail, so logs never hold a usable link."""
    path, mark, query = path.partition("?")
    shown = hash_path_secrets(path, compile_path_secrets(patterns)) or path  # re caches the patterns
    return shown + mark + hash_query_secrets(query, query_secret_names(query_secrets)) if mark else shown


def _replace_groups(match: re.Match[str]) -> str:
    text, start = match.group(0), match.start()
    if not match.re.groups:
        return secret_digest(text) if text else text
    pieces: list[str] = []
    position = 0
    for index in range(1, match.re.groups + 1):
        begin, end = match.span(index)
        if begin < 0 or begin == end or begin - start < position:
            continue  # unmatched, empty, or nested in a group already hidden
        pieces.append(text[position:begin - start])
        pieces.append(secret_digest(text[begin - start:end - start]))
        position = end - start
    pieces.append(text[position:])
    return "".join(pieces)
