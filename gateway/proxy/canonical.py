"""The one canonical form of a request path.

Every later decision (public paths, access rules, login interception, audit) matches this
form, and it is also what is forwarded, so the gateway and the PMS can never disagree on
which resource was asked for. Forms that different servers decode differently are refused
rather than guessed: encoded slash or backslash, `;` path parameters (`;jsessionid=`),
NUL and other control characters, double encoding, and invalid UTF-8.

Non-ASCII is refused too unless the policy allows it (`upstream.allow_non_ascii_paths`):
`/reservations/%EF%BC%91002` (a fullwidth 1) passed a `deny: ^/reservations/1002$` rule
and reached reservation 1002, because the PMS's `int()` reads Unicode digits. Where it is
allowed, it must be in NFKC form, so fullwidth digits, ligatures and decomposed accents,
which servers fold differently, are still refused. `normalise_numbers` strips the leading
zeros of all-digit segments, for a PMS that reads `01002` as `1002`: the gateway then
matches and forwards the one spelling the PMS means.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

# Characters forwarded literally; everything else is percent-encoded exactly once.
_SAFE = "/:@!$&'()*+,=-._~"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AMBIGUOUS_ESCAPES = re.compile(r"%(2[Ff]|5[Cc]|00|3[Bb])")
_DOUBLE_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Already canonical: starts with /, only characters forwarded literally, no dot or empty segment.
_PLAIN = re.compile(r"^(?=/)(?:/[A-Za-z0-9\-_~!$&'()*+,=:@]+(?:\.[A-Za-z0-9\-_~!$&'()*+,=:@]+)*)*/?$")
_LEADING_ZEROS = re.compile(r"(?<=/)0+(?=[0-9]+(?:/|$))")  # in an all-digit segment, keeping one digit


class AmbiguousPath(ValueError):
    """A path the gateway refuses to interpret (answered with 400)."""


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str  # decoded, dot segments resolved, as rules match it
    encoded: str  # the same path percent-encoded once, as forwarded


def canonicalize(
    raw_path: str,
    *,
    case_insensitive: bool = False,
    allow_non_ascii: bool = False,
    normalise_numbers: bool = False,
) -> CanonicalPath:
    """Decode once, refuse ambiguity, resolve dot segments and repeated slashes.

    The options are the policy's `upstream.case_insensitive_paths`,
    `upstream.allow_non_ascii_paths` and `upstream.normalise_numbers`.
    """
    if _PLAIN.match(raw_path):  # the common case, decided in one C-level match
        path = raw_path.lower() if case_insensitive else raw_path
        if normalise_numbers:
            path = _LEADING_ZEROS.sub("", path)
        return CanonicalPath(path=path, encoded=path)
    if not raw_path.startswith("/"):
        raise AmbiguousPath("the path must start with /")
    if _BAD_ESCAPE.search(raw_path):
        raise AmbiguousPath("malformed percent-encoding")
    if match := _AMBIGUOUS_ESCAPES.search(raw_path):
        raise AmbiguousPath(f"encoded {match.group(0).upper()} in the path")
    if "\\" in raw_path or ";" in raw_path:
        raise AmbiguousPath("backslash or ';' path parameter in the path")
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):  # encode: raw bytes read as surrogates
        raise AmbiguousPath("the path is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise AmbiguousPath("control character in the path")
    if _DOUBLE_ENCODED.search(decoded):
        raise AmbiguousPath("double percent-encoding in the path")
    if not decoded.isascii():
        if not allow_non_ascii:
            raise AmbiguousPath("non-ASCII character in the path")
        if unicodedata.normalize("NFKC", decoded) != decoded:
            raise AmbiguousPath("a path character with another spelling (fullwidth, ligature, decomposed)")
    path = _resolve_segments(decoded)
    if case_insensitive:
        path = path.lower()
    if normalise_numbers:
        path = _LEADING_ZEROS.sub("", path)
    return CanonicalPath(path=path, encoded=quote(path, safe=_SAFE))


def _resolve_segments(path: str) -> str:
    """RFC 3986 dot-segment removal, with empty segments (`//`) collapsed."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    trailing = "/" if segments and segments[-1] in ("", ".", "..") and output else ""
    return "/" + "/".join(output) + trailing
