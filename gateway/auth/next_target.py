"""Open-redirect protection for `next`-style parameters.

Only a path on this same site is a valid target: it starts with one `/`, is not
scheme-relative (`//evil.example`), has no backslash trick (`/\\evil.example`, which some
browsers read as `//`) and no control characters.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote


def is_local_target(value: str) -> bool:
    decoded = unquote(value)
    if not decoded.startswith("/") or decoded.startswith("//") or "\\" in decoded:
        return False
    return not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded)


def unsafe_targets(query: str, form_body: bytes | None, names: list[str]) -> list[str]:
    """Names of redirect parameters (in the query or a form body) that point off-site."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if form_body:
        pairs += parse_qsl(form_body.decode("utf-8", "replace"), keep_blank_values=True)
    return [name for name, value in pairs if name in names and value and not is_local_target(value)]
