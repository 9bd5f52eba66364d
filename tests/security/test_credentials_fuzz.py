"""Issue 8: the gateway's credential reader and a PMS's reading never disagree on the user.

For generated login bodies and Content-Types, either the gateway refuses the request, or
every reading a PMS might make (charset honoured; first, last, `;`-split and ASP.NET's
case-insensitive comma-joined duplicates for forms; first and last duplicate key for
JSON) gives the gateway's username. And where the stray-password check passes a form
body, no such reading finds a password field in it.
"""

from __future__ import annotations

import codecs
import json
from urllib.parse import parse_qsl, quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.schema import LoginRule
from gateway.readers.content_type import UnclearContentType, read_content_type
from gateway.readers.credentials import AmbiguousCredentials, carries_field, parse_credentials

FIELDS = ["username", "password", "Username", "username[]", " username", "user+AG4-ame", "usern%61me",
          "\uff55sername", "note", "pass+AHc-ord", "Password"]
CHARSETS = [None, None, None, "utf-8", "UTF8", "utf-7", "latin-1", "windows-1252", "utf-16", "shift_jis", "klingon"]
FORM = "application/x-www-form-urlencoded"
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.sampled_from(["bob", "manager", "al;ice", "é", "a+b", "x&username=manager", ""]) | st.text(max_size=8)
extras = st.lists(st.tuples(st.sampled_from(FIELDS + ["note", "room"] * 3), values), max_size=3)


@st.composite
def pairs(draw) -> list[tuple[str, str]]:
    """A login's two fields plus a few others (variants, duplicates, look-alikes), shuffled."""
    return draw(st.permutations([("username", draw(values)), ("password", draw(values)), *draw(extras)]))


def _declared(charset: str | None) -> str:
    return "utf-8" if charset is None else charset


def _encode(text: str, charset: str | None) -> bytes:
    try:
        return text.encode(_declared(charset))
    except (LookupError, UnicodeError):
        return text.encode("utf-8")


@st.composite
def form_bodies(draw) -> tuple[bytes, str]:
    charset = draw(st.sampled_from(CHARSETS))
    escape = draw(st.booleans())
    items = draw(pairs())
    separator = draw(st.sampled_from(["&"] * 5 + [";"]))
    text = separator.join(f"{k}={quote(v, safe='') if escape else v}" for k, v in items)
    header = FORM if charset is None else f"{FORM}; charset={charset}"
    body = draw(st.binary(max_size=40)) if draw(st.integers(0, 9)) == 0 else _encode(text, charset)
    return body, header


@st.composite
def json_bodies(draw) -> tuple[bytes, str]:
    charset = draw(st.sampled_from(CHARSETS))
    items = draw(pairs())
    nested = draw(st.integers(0, 4)) == 0
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in items]
    if nested:
        members.append('"profile": {"username": "manager"}')
    text = "{" + ", ".join(members) + "}"
    header = "application/json" if charset is None else f"application/json; charset={charset}"
    return _encode(text, charset), header


def _charset_of(header: str) -> str:
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset":
            return value.strip('"')
    return "utf-8"


def reference_form(body: bytes, header: str, field: str) -> set[str | None]:
    """How PMSs honouring the charset read `field`: first, last, `;`-split, ASP.NET."""
    text = codecs.decode(body, _charset_of(header), errors="replace")
    pairs = parse_qsl(text, keep_blank_values=True, encoding=_charset_of(header), errors="replace")
    semicolon = parse_qsl(text.replace(";", "&"), keep_blank_values=True, errors="replace")
    found = [v for k, v in pairs if k == field]
    split = [v for k, v in semicolon if k == field]
    aspnet = [v for k, v in pairs if k.lower() == field.lower()]
    return {
        found[0] if found else None,
        found[-1] if found else None,
        split[0] if split else None,
        split[-1] if split else None,
        ",".join(aspnet) if aspnet else None,
    }


def reference_json(body: bytes, header: str, field: str) -> set[str | None]:
    document = codecs.decode(body, _charset_of(header))
    last = json.loads(document)
    first = json.loads(document, object_pairs_hook=lambda p: dict(reversed(p)))
    return {last.get(field), first.get(field)}


def gateway_username(body: bytes, header: str, rule: LoginRule) -> str | None:
    """The gateway's username, or None when it refuses the request."""
    try:
        return parse_credentials(body, read_content_type([header]), rule).username
    except (AmbiguousCredentials, UnclearContentType):
        return None


@SETTINGS
@given(form_bodies())
def test_form_login_is_refused_or_read_as_every_pms_reads_it(case):
    body, header = case
    user = gateway_username(body, header, LoginRule())
    if user is not None:
        assert reference_form(body, header, "username") == {user}


@SETTINGS
@given(json_bodies())
def test_json_login_is_refused_or_read_as_every_pms_reads_it(case):
    body, header = case
    user = gateway_username(body, header, LoginRule(format="json"))
    if user is not None:
        assert reference_json(body, header, "username") == {user}


@SETTINGS
@given(form_bodies())
def test_a_form_the_stray_check_passes_carries_no_password_to_any_reader(case):
    body, header = case
    try:
        if carries_field(body, read_content_type([header]), "password"):
            return
    except (AmbiguousCredentials, UnclearContentType):
        return
    assert reference_form(body, header, "password") == {None}
