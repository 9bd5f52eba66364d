"""Reading credentials out of a request: the one reader every feature uses.

The gateway and the PMS must never read two different users out of one request. A login
request is therefore forwarded only in a form the gateway fully understood, and anything
another reader could take differently is refused with 400 (413 for a body too large to
read) before a byte reaches the PMS:

- a declared `charset` other than the login rule's (`login.charset`; UTF-7 made the PMS
  read `manager` where the gateway read `bob`), bytes that do not decode in it, a raw `;`
  (some servers split form bodies on it; browsers always percent-encode it);
- a credential field given twice, or in another spelling a framework maps onto it
  (`username[]`, `username.x`, `Username` for ASP.NET, ` username` for PHP, fullwidth
  letters), or a credential key anywhere but once at the top of a JSON object;
- a credential name in the query string or in a cookie (ASP.NET's `Request[]` reads both);
- a body the gateway did not read whole: over the read limit, of unknown Content-Type,
  or compressed (`Content-Encoding`).

Outside the login path, `refuse_stray_credentials` applies the same reader to keep a
password from reaching the PMS anywhere but the declared login form (see its docstring
for exactly which bodies it reads and which it refuses unread).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from functools import lru_cache
from urllib.parse import parse_qsl, unquote_plus

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.policy.schema import LoginRule, PasswordForm
from gateway.proxy.exchange import Exchange
from gateway.proxy.overrides import METHOD_PARAMETER
from gateway.readers.field_names import canonical_name
from gateway.readers.content_type import ContentType, UnclearContentType, read_content_type
from gateway.sessions.cookies import hidden_names, parse_cookie_header

MAX_CREDENTIAL_BODY = 64 * 1024  # login bodies, and form/JSON bodies checked for a stray password
MAX_MULTIPART_CHECK = 16 * 1024 * 1024  # multipart bodies (uploads) checked for a stray password
_SEPARATORS = re.compile(r"[&;]")  # `;` too: CGI.pm, old servlet containers split on it


class AmbiguousCredentials(ValueError):
    """Answered with `status`; the message names the problem, never a value."""

    status = 400


class UnreadBody(AmbiguousCredentials):
    """A body the gateway would have to forward unread (too large to read whole)."""

    status = 413


@dataclass(frozen=True)
class Credentials:
    username: str
    has_password: bool


# -- names ----------------------------------------------------------------------------------


def is_credential_name(name: str, field: str) -> bool:
    """`name` is `field` to some framework: itself, `field[]`, `field[0]`, `field.x`,
    another case, padded with white space, or a compatibility spelling."""
    key, target = canonical_name(name), canonical_name(field)
    return key == target or key.startswith(target + "[") or key.startswith(target + ".")


def _fields(rule: LoginRule) -> tuple[str, str]:
    return rule.username_field, rule.password_field


def _split_names(text: str, encodings: Iterable[str]) -> Iterator[str]:
    """Every key of a query string or form body, in every reading given (`&` and `;`)."""
    for item in _SEPARATORS.split(text):
        raw = item.partition("=")[0]
        for encoding in encodings:
            yield unquote_plus(raw, encoding=encoding, errors="replace")


def refuse_in_query(query: str, fields: Sequence[str]) -> None:
    if not query:
        return
    for key in _split_names(query, ("utf-8", "latin-1")):
        for field in fields:
            if is_credential_name(key, field):
                raise AmbiguousCredentials(f"credential field {field!r} in the query string")


def refuse_in_cookies(cookie_headers: Sequence[str], fields: Sequence[str]) -> None:
    if not cookie_headers:
        return
    field = _credential_in_cookies("; ".join(cookie_headers), tuple(fields))
    if field is not None:
        raise AmbiguousCredentials(f"credential field {field!r} in a cookie")


@lru_cache(maxsize=256)  # a browser sends the same Cookie header on every request of a page
def _credential_in_cookies(header: str, fields: tuple[str, ...]) -> str | None:
    """The first of `fields` that a cookie of `header` names in some reading, or None."""
    for name, value in parse_cookie_header(header):
        for reading in {name, unquote_plus(name, errors="replace"), *hidden_names(value)}:
            for field in fields:
                if is_credential_name(reading, field):
                    return field
    return None


def check_query(query: str, rule: LoginRule) -> None:
    refuse_in_query(query, _fields(rule))


# -- the login request ----------------------------------------------------------------------


def parse_credentials(body: bytes, content_type: ContentType | None, rule: LoginRule) -> Credentials:
    """The one username (and whether a password came) of a login body, read exactly as
    a PMS honouring `login.charset` reads it, or AmbiguousCredentials."""
    pairs = _credential_pairs(body, content_type, rule.charset, rule.format, _fields(rule), "login")
    return _from_pairs(pairs, rule)


def _credential_pairs(
    body: bytes, content_type: ContentType | None, charset: str, form_format: str, fields: Sequence[str], what: str
) -> list[tuple[str, object]]:
    """The top-level (name, value) pairs of a credential body (`what`: "login", "password
    form"), read in `charset` and `form_format` only, with every spelling of `fields` other
    than the exact one refused; or AmbiguousCredentials."""
    media = content_type.media if content_type else "unspecified"
    if content_type is not None and content_type.charset not in (None, charset):
        raise AmbiguousCredentials(f"{what} charset {content_type.charset!r} is not the policy's {charset!r}")
    try:
        text = body.decode(charset)
    except UnicodeDecodeError:
        raise AmbiguousCredentials(f"{what} body does not decode as {charset}") from None
    if form_format == "form":
        if content_type is None or not content_type.is_form:
            raise AmbiguousCredentials(f"{what} must be form-encoded, not {media}")
        if ";" in text:
            raise AmbiguousCredentials("raw ';' in a form body (a browser encodes it)")
        try:
            pairs: list[tuple[str, object]] = list(parse_qsl(
                text, keep_blank_values=True, strict_parsing=bool(text), encoding=charset, errors="strict"
            ))
        except (UnicodeDecodeError, ValueError):
            raise AmbiguousCredentials("malformed form body") from None
    else:
        if content_type is None or not content_type.is_json:
            raise AmbiguousCredentials(f"{what} must be JSON, not {media}")
        document = _load_json(text, refuse_duplicates=True)
        if not isinstance(document, dict):
            raise AmbiguousCredentials(f"{what} JSON must be an object")
        for depth, key in _json_keys(document):
            if depth > 0 and any(is_credential_name(key, field) for field in fields):
                raise AmbiguousCredentials(f"credential key {key!r} nested in the {what} JSON")
        pairs = list(document.items())
    for key, _ in pairs:
        for field in fields:
            if key != field and is_credential_name(key, field):
                raise AmbiguousCredentials(f"ambiguous credential field {key!r}")
    return pairs


def _from_pairs(pairs: list[tuple[str, object]], rule: LoginRule) -> Credentials:
    usernames = [v for k, v in pairs if k == rule.username_field]
    passwords = [v for k, v in pairs if k == rule.password_field]
    if len(usernames) != 1 or not isinstance(usernames[0], str):
        raise AmbiguousCredentials(f"exactly one {rule.username_field!r} field is needed")
    if len(passwords) > 1 or (passwords and not isinstance(passwords[0], str)):
        raise AmbiguousCredentials(f"at most one {rule.password_field!r} field is allowed")
    return Credentials(username=usernames[0], has_password=bool(passwords))


def request_content_type(ex: Exchange) -> ContentType | None:
    """The request's Content-Type, refusing an unclear one and any Content-Encoding
    (a compressed body is one the gateway would forward unread)."""
    encoding = ex.request.headers.getall("Content-Encoding", [])
    if any(value.strip().lower() not in ("", "identity") for value in encoding):
        raise AmbiguousCredentials("a compressed request body cannot be checked")
    try:
        return read_content_type(ex.request.headers.getall("Content-Type", []))
    except UnclearContentType as exc:
        raise AmbiguousCredentials(str(exc)) from None


async def read_login(ex: Exchange, rule: LoginRule) -> tuple[Credentials, bytes]:
    """Read a login request whole and return its one username, or AmbiguousCredentials.

    Used by every feature that needs the login's username (the interceptor, the captcha
    gate), so they cannot read two different users out of one request.
    """
    body, content_type = await _read_credential_request(ex, _fields(rule), "login")
    return parse_credentials(body, content_type, rule), body


async def _read_credential_request(
    ex: Exchange, fields: Sequence[str], what: str
) -> tuple[bytes, ContentType | None]:
    """The checks every request carrying a password gets before its body is parsed: no
    credential name in the query or the cookies, the body read whole (or UnreadBody)."""
    refuse_in_query(ex.query, fields)
    refuse_in_cookies(ex.request.headers.getall("Cookie", []), fields)
    content_type = request_content_type(ex)
    body = await ex.read_body(MAX_CREDENTIAL_BODY)
    if body is None:
        raise UnreadBody(f"{what} body over {MAX_CREDENTIAL_BODY // 1024} KiB")
    return body, content_type


# -- the PMS's other password forms -------------------------------------------------------------


def password_form_fields(form: PasswordForm, rule: LoginRule) -> tuple[str, ...]:
    """Every credential name a password form's request is checked for: its own fields and
    the login's (a login field the form does not declare must not ride along)."""
    names = (form.username_field, form.password_field, *form.new_password_fields, rule.username_field, rule.password_field)
    return tuple(dict.fromkeys(name for name in names if name))


async def read_password_form(ex: Exchange, form: PasswordForm, rule: LoginRule) -> str | None:
    """Read a password form's request whole, as the login is read (`login.charset`, one
    format, no credential name in the query or cookies, each field at most once, the
    current password exactly once); return the username it names (its `username_field`),
    None when it names none, or raise AmbiguousCredentials.

    A login field the form does not declare (`login.username_field` on a form without a
    username field, say) is refused: a PMS could read it as whom to sign in."""
    fields = password_form_fields(form, rule)
    body, content_type = await _read_credential_request(ex, fields, "password form")
    pairs = _credential_pairs(body, content_type, rule.charset, form.format, fields, "password form")
    declared = {form.username_field, form.password_field, *form.new_password_fields}
    for field in fields:
        values = [value for key, value in pairs if key == field]
        if field not in declared and values:
            raise AmbiguousCredentials(f"field {field!r} is not part of this password form")
        if len(values) > 1 or any(not isinstance(value, str) for value in values):
            raise AmbiguousCredentials(f"at most one {field!r} field is allowed")
        if field in (form.password_field, form.username_field) and len(values) != 1:
            raise AmbiguousCredentials(f"exactly one {field!r} field is needed")
    if form.username_field is None:
        return None
    return next(value for key, value in pairs if key == form.username_field)  # type: ignore[return-value]


# -- a password anywhere else -----------------------------------------------------------------


async def refuse_stray_credentials(ex: Exchange, field: str, charset: str) -> None:
    """Raise AmbiguousCredentials when a request outside the login form might carry `field`.

    The rule, chosen so that ordinary traffic passes and nothing is forwarded unchecked:

    - The query string and the cookies are read on every request; `field` in any
      spelling there is refused.
    - Bodies of requests of any method (Rack and ASP.NET parse a GET's form body too)
      are read when they are of a media type that
      frameworks decode into request parameters: form-urlencoded, multipart/*, JSON
      (`application/json`, `+json`, `text/json`), and no Content-Type at all (Rack
      parses such a POST as a form; it is read both as a form and as JSON). Other types
      (`application/octet-stream`, images, PDF, XML, `text/plain`) are no parameters to
      any framework and pass unread, so uploads sent raw pass at any size.
    - Such a body is read whole, up to 64 KiB (16 MiB for multipart, whose file parts are
      not decoded, only their headers), chunked or not; larger gets 413, never forwarded
      unchecked. A compressed one, one with an unclear Content-Type or an unknown or
      non-ASCII-compatible charset (UTF-7), JSON that does not decode, and multipart the
      parser cannot read to its closing boundary are refused with 400: the gateway
      cannot exclude that the PMS reads a password out of them.
    - The same bodies are refused when they carry `_method` (a method override Rack and
      Laravel/Symfony honour in a POST body), in any spelling.
    - A form body is read in every ASCII-compatible reading at once (the declared
      charset, `charset`, UTF-8, Latin-1; `&` and `;` as separators), JSON keys at any
      depth, multipart names plain, quoted and RFC 2231 (`name*=utf-8''password`).
    """
    refuse_in_query(ex.query, (field,))
    refuse_in_cookies(ex.request.headers.getall("Cookie", []), (field,))
    if not ex.request.body_exists:
        return  # whatever the method: Rack and ASP.NET read a form body of a GET or OPTIONS too
    content_type = request_content_type(ex)
    if content_type is not None and not (content_type.is_form or content_type.is_json or content_type.is_multipart):
        return
    limit = MAX_MULTIPART_CHECK if content_type is not None and content_type.is_multipart else MAX_CREDENTIAL_BODY
    body = await ex.read_body(limit)
    if body is None:
        raise UnreadBody(f"a form, JSON or multipart body over {limit // 1024} KiB cannot be checked")
    if body and carries_field(body, content_type, field, charset):
        raise AmbiguousCredentials("credentials outside the login form")
    if body and carries_field(body, content_type, METHOD_PARAMETER, charset):
        # Rack and Laravel/Symfony route a POST on `_method` in its body: the PMS would run
        # another method than the one the access rules judged (the query's is refused earlier).
        raise AmbiguousCredentials("a _method field (method override) in the body")


def carries_field(body: bytes, content_type: ContentType | None, field: str, charset: str = "utf-8") -> bool:
    """Does a non-login body carry `field` to any reader? AmbiguousCredentials if unreadable."""
    if content_type is None:
        return _form_carries(body, field, (charset,)) or _json_carries(body, field, charset, lenient=True)
    encodings = (content_type.charset or charset,)
    if content_type.is_form:
        return _form_carries(body, field, encodings)
    if content_type.is_json:
        return _json_carries(body, field, content_type.charset or "utf-8", lenient=False)
    if content_type.is_multipart:
        return any(is_credential_name(name, field) for name in multipart_names(body, content_type.boundary))
    return False


def _form_carries(body: bytes, field: str, encodings: tuple[str, ...]) -> bool:
    # Every reading: ASCII-compatible charsets agree on ASCII bytes, so the Latin-1 reading
    # sees every ASCII spelling; UTF-8 and the declared charset add their own compatibility forms.
    text = body.decode("latin-1")
    readings = tuple(dict.fromkeys((*encodings, "utf-8", "latin-1")))
    return any(is_credential_name(key, field) for key in _split_names(text, readings))


def _json_carries(body: bytes, field: str, encoding: str, *, lenient: bool) -> bool:
    try:
        document = _load_json(body.decode(encoding), refuse_duplicates=False)
    except (UnicodeDecodeError, AmbiguousCredentials):
        if lenient:
            return False  # not JSON: the form reading decides
        raise AmbiguousCredentials("JSON body the gateway cannot read") from None
    return any(is_credential_name(key, field) for _, key in _json_keys(document))


# -- shared parsers -----------------------------------------------------------------------------


def _load_json(text: str, *, refuse_duplicates: bool) -> object:
    def pairs_hook(pairs: list[tuple[str, object]]) -> dict:
        if refuse_duplicates and len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs) if refuse_duplicates else _AllKeys(pairs)

    try:
        return json.loads(text, object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError) as exc:
        raise AmbiguousCredentials(f"malformed JSON body: {exc}") from None


class _AllKeys(dict):
    """A JSON object that remembers duplicate keys too (any of them may be the one read)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _json_keys(document: object) -> Iterator[tuple[int, str]]:
    """(depth, key) of every key of every object in a JSON document, duplicates included."""
    stack: list[tuple[int, object]] = [(0, document)]
    while stack:
        depth, value = stack.pop()
        if isinstance(value, dict):
            items = value.pairs if isinstance(value, _AllKeys) else list(value.items())
            for key, child in items:
                yield depth, key
                stack.append((depth + 1, child))
        elif isinstance(value, list):
            stack.extend((depth + 1, child) for child in value)


def multipart_names(body: bytes, boundary: str | None) -> set[str]:
    """Every name any reader could give a part of a multipart body: the plain and quoted
    `name`, RFC 2231/5987 `name*=` (which RFC 7578 forbids but some servers honour), in
    Latin-1 and UTF-8. Parsed with python-multipart; anything it cannot read to the
    closing boundary, or data after that boundary, is AmbiguousCredentials."""
    if not boundary:
        raise AmbiguousCredentials("multipart body without a boundary")
    headers: list[tuple[bytes, bytes]] = []
    current = {"field": b"", "value": b""}
    finished = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        headers.append((current["field"], current["value"]))
        current["field"], current["value"] = b"", b""

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_end": lambda: finished.append(True),
    }
    try:
        parser = MultipartParser(boundary.encode("latin-1"), callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, UnicodeEncodeError):
        raise AmbiguousCredentials("multipart body the gateway cannot parse") from None
    close = b"--" + boundary.encode("latin-1") + b"--"
    end = body.find(close)
    if not finished or end < 0 or body[end + len(close) :].strip():
        raise AmbiguousCredentials("multipart body without a clean closing boundary")
    names: set[str] = set()
    for field, value in headers:
        if field.strip().lower() != b"content-disposition":
            continue
        names.update(_disposition_names(value))
    return names


def _disposition_names(value: bytes) -> set[str]:
    names = set()
    plain = parse_options_header(value)[1].get(b"name")
    if plain is not None:
        names.update({plain.decode("latin-1"), plain.decode("utf-8", "replace")})
    header = Message()
    header["Content-Disposition"] = value.decode("latin-1")
    for key, param in header.get_params(header="content-disposition")[1:]:
        if key.strip().lower().partition("*")[0] != "name":
            continue
        text = collapse_rfc2231_value(param) if isinstance(param, tuple) else param
        names.update({text, unquote_plus(text, encoding="utf-8", errors="replace")})
        names.add(text.encode("latin-1", "replace").decode("utf-8", "replace"))
    return names
