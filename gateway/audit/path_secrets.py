"""Secrets inside paths (reset links, guest order links) never reach the audit trail in clear.

A PMS puts secrets in URLs it mails out: `/reset/<token>`, `/guest/order/<code>/<secret>`.
The audit trail records every path, so the policy names the path patterns whose parts are
secret (`audit.path_secrets`: each capture group of a pattern is a secret part) and this
module replaces each captured part by a short digest. The same link always gives the same
digest, so an investigator can still follow one link across records (who opened the reset
link, from where, how often) without being able to use it.

One function, used by the audit preparer for every record (staff requests, reset forms,
public guest areas alike), and by every log line that names a path (`path_for_logs`), so
no feature hashes links its own way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

DIGEST_PREFIX = "~"  # never produced by canonical PMS paths' secrets alone, easy to grep for
_PERSON = b"pgw-path-secret"


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


def path_for_logs(path: str, patterns: Iterable[str]) -> str:
    """`path` as a log line may show it: the policy's `audit.path_secrets` (its patterns as
    written) digested exactly as in the audit trail, so logs never hold a usable link."""
    return hash_path_secrets(path, compile_path_secrets(patterns)) or path  # re caches the patterns


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
