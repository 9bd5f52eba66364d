"""The one canonical form of a request path.

Every later decision (public paths, access rules, login interception, audit) matches this
form, and it is also what is forwarded, so the gateway and the PMS can never disagree on
which resource was asked for. Forms that different servers decode differently are refused
rather than guessed: encoded slash or backslash, `;` path parameters (`;jsessionid=`),
NUL and other control characters, double encoding, and invalid UTF-8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

# Characters forwarded literally; everything else is percent-encoded exactly once.
_SAFE = "/:@!$&'()*+,=-._~"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AMBIGUOUS_ESCAPES = re.compile(r"%(2[Ff]|5[Cc]|00|3[Bb])")
_DOUBLE_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Already canonical: only characters forwarded literally, no dot segment, no empty segment.
_PLAIN = re.compile(r"^(?:/[A-Za-z0-9\-_~!$&'()*+,=:@]+(?:\.[A-Za-z0-9\-_~!$&'()*+,=:@]+)*)*/?$")


class AmbiguousPath(ValueError):
    """A path the gateway refuses to interpret (answered with 400)."""


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str  # decoded, dot segments resolved, as rules match it
    encoded: str  # the same path percent-encoded once, as forwarded


def canonicalize(raw_path: str, *, case_insensitive: bool = False) -> CanonicalPath:
    """Decode once, refuse ambiguity, resolve dot segments and repeated slashes."""
    if _PLAIN.match(raw_path):  # the common case, decided in one C-level match
        path = raw_path.lower() if case_insensitive else raw_path
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
    except UnicodeDecodeError:
        raise AmbiguousPath("the path is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise AmbiguousPath("control character in the path")
    if _DOUBLE_ENCODED.search(decoded):
        raise AmbiguousPath("double percent-encoding in the path")
    path = _resolve_segments(decoded)
    if case_insensitive:
        path = path.lower()
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
