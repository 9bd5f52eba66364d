"""The one reader of redirect targets: `next`-style parameters and relayed `Location`s.

Every redirect the gateway sends or relays is judged here, so the gateway, the PMS and
the browser cannot read three different places out of one target. A target is local
only if it is a path that starts with a single `/` followed by neither `/` nor `\\`
(browsers read `\\` as `/`, so `/\\evil.example` is `//evil.example`, another host), has
no backslash and no control character at all (browsers silently drop tab and newline
anywhere, so `/\\t/evil.example` is `//evil.example` too). The rule holds for the value
as sent and for every percent-decoding of it until it stops changing, since the PMS or
a later hop may decode it again (`/%2F%2Fevil`, `/%5Cevil`). An absolute URL is local
only when it names exactly the public origin and its path passes the same rule.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import parse_qsl, unquote

MAX_DECODINGS = 8  # more nested percent-encoding than this is not a path anyone links to


def _decodings(value: str) -> list[str] | None:
    """The value and each percent-decoding of it until stable; None if it never settles."""
    stages = [value]
    while len(stages) <= MAX_DECODINGS:
        decoded = unquote(stages[-1], errors="replace")
        if decoded == stages[-1]:
            return stages
        stages.append(decoded)
    return None


def _is_local_path(text: str) -> bool:
    if not text.startswith("/") or text[1:2] in ("/", "\\") or "\\" in text:
        return False
    return not any(unicodedata.category(ch) == "Cc" for ch in text)


def is_local_target(value: str) -> bool:
    """True if `value`, used as a redirect target, cannot leave this site."""
    stages = _decodings(value)
    return stages is not None and all(_is_local_path(stage) for stage in stages)


def is_local_location(location: str, public_origin: str) -> bool:
    """True if a `Location` header keeps the browser on `public_origin` (compared exactly)."""
    if location.startswith(public_origin):
        rest = location[len(public_origin) :]
        return rest == "" or is_local_target(rest)
    return is_local_target(location)


def unsafe_targets(query: str, form_body: bytes | None, names: list[str]) -> list[str]:
    """Names of redirect parameters (in the query or a form body) that point off-site.

    Names are matched case-insensitively: ASP.NET reads `ReturnUrl` and `returnUrl` alike.
    """
    wanted = {name.lower() for name in names}
    pairs = parse_qsl(query, keep_blank_values=True)
    if form_body:
        pairs += parse_qsl(form_body.decode("utf-8", "replace"), keep_blank_values=True)
    return [name for name, value in pairs if name.lower() in wanted and value and not is_local_target(value)]
