"""Issue 8, item 1: a login is forwarded only in a form the gateway fully understood.

`charset=utf-7` made a PMS that honours the charset log in `manager` while the gateway
read `bob` (and asked for bob's code). Every hostile login below is refused with 400 (413
for a body too large to read) and never reaches the PMS, the naive one or the demo.
"""

from __future__ import annotations

import pytest

from gateway.policy import ConfigError, load_policy
from gateway.risk.lockout import Lockouts
from tests.security.hostile import FORM, demo, naive, send

SWAP = b"user+AG4-ame=manager&username=bob&password=manager-demo-pw"  # UTF-7: "username=manager"

HOSTILE_LOGINS = {
    "utf-7 identity swap": ([("Content-Type", f"{FORM}; charset=utf-7")], SWAP),
    "charset other than login.charset": ([("Content-Type", f"{FORM}; charset=windows-1252")], b"username=bob&password=x"),
    "charset given twice": ([("Content-Type", f"{FORM}; charset=utf-8; charset=utf-7")], b"username=bob&password=x"),
    "RFC 2231 charset": ([("Content-Type", f"{FORM}; charset*=utf-8''utf-7")], b"username=bob&password=x"),
    "two Content-Type headers": ([("Content-Type", FORM), ("Content-Type", f"{FORM}; charset=utf-7")], SWAP),
    "bytes that do not decode": ([("Content-Type", FORM)], b"username=b%FFob&password=x"),
    "raw bytes that do not decode": ([("Content-Type", FORM)], b"username=b\xffob&password=x"),
    "duplicate username": ([("Content-Type", FORM)], b"username=bob&username=manager&password=manager-demo-pw"),
    "username in another case": ([("Content-Type", FORM)], b"Username=manager&username=bob&password=manager-demo-pw"),
    "username with a leading space": ([("Content-Type", FORM)], b"%20username=manager&username=bob&password=x"),
    "username[]": ([("Content-Type", FORM)], b"username[]=manager&username=bob&password=x"),
    "semicolon separator": ([("Content-Type", FORM)], b"username=bob;username=manager&password=x"),
    "no Content-Type": ([], b"username=bob&password=manager-demo-pw"),
    "compressed body": ([("Content-Type", FORM), ("Content-Encoding", "gzip")], b"username=bob&password=x"),
}


@pytest.fixture(params=["naive", "demo"])
async def upstream(request, tmp_path):
    async with (naive if request.param == "naive" else demo)(tmp_path) as upstream:
        yield upstream


@pytest.mark.parametrize("name", HOSTILE_LOGINS)
async def test_hostile_login_is_refused_before_the_pms(upstream, name):
    headers, body = HOSTILE_LOGINS[name]
    status, page = await send(upstream.env.url, "POST", "/login", headers, body)
    assert status == 400, page
    assert not upstream.saw("/login")
    assert await upstream.env.services.users.list() == []  # nobody was asked for a code


async def test_credentials_in_the_query_string_or_a_cookie_are_refused(upstream):
    url = upstream.env.url
    # The naive PMS reads a credential missing from the body out of the query or a cookie.
    cases = [
        ("/login?username=manager", [("Content-Type", FORM)], b"password=manager-demo-pw"),
        ("/login?password=manager-demo-pw", [("Content-Type", FORM)], b"username=manager"),
        ("/login", [("Content-Type", FORM), ("Cookie", "password=manager-demo-pw")], b"username=manager"),
        ("/login", [("Content-Type", FORM), ("Cookie", "a=1; Username=manager")], b"username=bob&password=x"),
    ]
    for path, headers, body in cases:
        status, page = await send(url, "POST", path, headers, body)
        assert status == 400, (path, headers, page)
    assert not upstream.saw("/login")


async def test_login_bodies_not_read_whole_are_refused(upstream):
    url, big = upstream.env.url, b"username=bob&password=x&pad=" + b"a" * (64 * 1024)
    status, _ = await send(url, "POST", "/login", [("Content-Type", FORM)], big)
    assert status == 413
    status, _ = await send(url, "POST", "/login", [("Content-Type", FORM)], chunks=[big[:1000], big[1000:]])
    assert status == 413
    assert not upstream.saw("/login")


async def test_a_chunked_login_is_read_whole_and_judged(tmp_path):
    async with naive(tmp_path) as upstream:
        chunks = [b"username=al", b"ice&password=alice-demo-pw"]
        status, _ = await send(upstream.env.url, "POST", "/login", [("Content-Type", FORM)], chunks=chunks)
        assert status not in (400, 413) and upstream.saw("/login")  # forwarded whole, judged by the PMS


async def test_a_locked_account_is_no_password_oracle(upstream):
    """manager is locked; the swap would have let the PMS judge manager's password."""
    env = upstream.env
    lockouts = Lockouts(env.services.store, env.policy)
    for _ in range(5):
        await lockouts.record_failure("manager", "127.0.0.1")  # locked, or slowed down on the hotel LAN
    status, _ = await send(env.url, "POST", "/login", [("Content-Type", FORM)], b"username=manager&password=guess")
    assert status == 429
    headers = [("Content-Type", f"{FORM}; charset=utf-7")]
    status, _ = await send(env.url, "POST", "/login", headers, b"user+AG4-ame=manager&username=bob&password=guess")
    assert status == 400
    assert not upstream.saw("/login")


async def test_the_declared_login_charset_is_accepted_and_others_refused(tmp_path):
    async with naive(tmp_path, charset="windows-1252") as upstream:
        body = b"username=alice&password=alice-demo-pw"
        status, _ = await send(upstream.env.url, "POST", "/login", [("Content-Type", f"{FORM}; charset=utf-8")], body)
        assert status == 400 and not upstream.saw("/login")
        headers = [("Content-Type", f"{FORM}; charset=Windows-1252")]
        status, _ = await send(upstream.env.url, "POST", "/login", headers, body)
        assert status not in (400, 413) and upstream.saw("/login")


@pytest.mark.parametrize(
    "charset, message",
    [("utf-7", "not ASCII-compatible"), ("utf-16", "not ASCII-compatible"), ("base64", "not ASCII-compatible"),
     ("klingon", "unknown charset")],
)
def test_policy_refuses_a_charset_it_cannot_read_safely(tmp_path, charset, message):
    path = tmp_path / "site.yaml"
    path.write_text(f"login:\n  path: /login\n  charset: {charset}\n")
    with pytest.raises(ConfigError) as error:
        load_policy(str(path))
    text = str(error.value)
    assert f"{path}:3: login.charset:" in text and message in text
