"""Reading the credentials out of a login request, refusing anything ambiguous.

The gateway and the PMS must never read two different users out of one request: a body
with the username twice, `username[]`, credentials in the query string, or a JSON object
with duplicate keys is refused before anything is forwarded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.policy.schema import LoginRule


class AmbiguousCredentials(ValueError):
    """Answered with 400; the message names the problem, never a value."""


@dataclass(frozen=True)
class Credentials:
    username: str
    has_password: bool


def _is_variant(key: str, field: str) -> bool:
    """`username[]`, `username[0]`, `username.x` are other spellings PHP/Rails/Express accept."""
    return key != field and (key.startswith(field + "[") or key.startswith(field + "."))


def check_query(query: str, rule: LoginRule) -> None:
    for key, _ in parse_qsl(query, keep_blank_values=True):
        for field in (rule.username_field, rule.password_field):
            if key == field or _is_variant(key, field):
                raise AmbiguousCredentials(f"credential field {field!r} in the query string")


def parse_credentials(body: bytes, content_type: str, rule: LoginRule) -> Credentials:
    media = content_type.split(";")[0].strip().lower()
    if rule.format == "form":
        if media != "application/x-www-form-urlencoded":
            raise AmbiguousCredentials(f"login must be form-encoded, not {media or 'unspecified'}")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise AmbiguousCredentials("malformed form body") from None
        return _from_pairs(pairs, rule)
    if media != "application/json" and not media.endswith("+json"):
        raise AmbiguousCredentials(f"login must be JSON, not {media or 'unspecified'}")
    try:
        document = json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AmbiguousCredentials(f"malformed JSON body: {exc}") from None
    if not isinstance(document, dict):
        raise AmbiguousCredentials("login JSON must be an object")
    return _from_pairs([(k, v) for k, v in document.items()], rule)


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _from_pairs(pairs: list[tuple[str, object]], rule: LoginRule) -> Credentials:
    usernames = [v for k, v in pairs if k == rule.username_field]
    passwords = [v for k, v in pairs if k == rule.password_field]
    for key, _ in pairs:
        if _is_variant(key, rule.username_field) or _is_variant(key, rule.password_field):
            raise AmbiguousCredentials(f"ambiguous credential field {key!r}")
    if len(usernames) != 1 or not isinstance(usernames[0], str):
        raise AmbiguousCredentials(f"exactly one {rule.username_field!r} field is needed")
    if len(passwords) > 1 or (passwords and not isinstance(passwords[0], str)):
        raise AmbiguousCredentials(f"at most one {rule.password_field!r} field is allowed")
    return Credentials(username=usernames[0], has_password=bool(passwords))




def carries_field(body: bytes, content_type: str, field: str) -> bool:
    """Does a non-login body carry the password field (form, JSON at any depth, multipart)?"""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            keys = [k for k, _ in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)]
        except ValueError:
            return False
        return any(k == field or _is_variant(k, field) for k in keys)
    if media == "application/json" or media.endswith("+json"):
        try:
            return _json_has_key(json.loads(body), field)
        except ValueError:
            return False
    if media.startswith("multipart/"):
        return re.search(rb'name="' + re.escape(field.encode()) + rb'(\[[^"]*\])?"', body) is not None
    return False


def _json_has_key(value: object, field: str) -> bool:
    if isinstance(value, dict):
        return any(k == field or _json_has_key(v, field) for k, v in value.items())
    if isinstance(value, list):
        return any(_json_has_key(v, field) for v in value)
    return False
