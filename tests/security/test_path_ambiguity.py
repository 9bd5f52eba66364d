"""Issue 8, item 9: a path the gateway and the PMS read as two different resources.

`/reservations/%EF%BC%91002` (a fullwidth 1) and `/reservations/01002` reached the target of
a `deny: ^/reservations/1002$` rule: the PMS routes with `int()`, which reads both as 1002.
Non-ASCII paths are now refused (unless `upstream.allow_non_ascii_paths`, and even then
compatibility spellings such as fullwidth digits are), and leading zeros are either
matched by a rule anchored on the PMS's own route (`0*1002`) or stripped before matching
and forwarding (`upstream.normalise_numbers`). Checked against the naive PMS (its
`/reservations/{id}` uses `int()`) and the demo PMS, plus a property of `canonicalize`.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import load_policy
from gateway.policy.schema import Policy
from gateway.proxy.canonical import AmbiguousPath, canonicalize
from tests.harness import serve_app
from tests.login_env import Browser, LoginEnv, login_env
from tests.security import naive_upstream

FULLWIDTH_1002 = "/reservations/%EF%BC%91002"  # "１002"
ZERO_1002 = "/reservations/01002"
SECRET = "Ada Lovelace"  # on reservation 1002 of the naive PMS


def _policy(deny: str, *, naive: bool = True, **upstream: bool) -> Policy:
    base = load_policy("policies/default.yaml").model_dump(mode="json", exclude={"notifications"})
    base["upstream"] = {**base["upstream"], **upstream}
    if naive and base["login"].get("identity", {}).get("path"):  # the naive PMS names its user on /
        base["login"]["identity"] = {**base["login"]["identity"], "path": "/"}
    base["groups"] = {"reception": {"members": ["alice"], "access": [{"deny": deny}]}}
    base["default_group"] = None
    return Policy.model_validate(base)


@contextlib.asynccontextmanager
async def _naive(tmp_path, policy: Policy) -> AsyncIterator[tuple[LoginEnv, Browser, list]]:
    """A gateway in front of the naive PMS, alice signed in; yields what the PMS routed."""
    app = naive_upstream.create_app()
    async with serve_app(app) as pms_url, login_env(tmp_path, policy=policy, pms_url=pms_url) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.request(
                "POST", "/login", data="username=alice&password=alice-demo-pw",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            await browser.enroll("alice")
            yield env, browser, app[naive_upstream.SEEN]
        finally:
            await browser.close()


def _reservation_reads(seen: list) -> list[str]:
    return [path for method, path, _ in seen if path.startswith("/reservations/")]


async def test_naive_pms_fullwidth_digit_refused_and_leading_zero_denied_by_an_anchored_rule(tmp_path):
    async with _naive(tmp_path, _policy(r"^/reservations/0*1002$")) as (env, browser, seen):
        status, _, page = await browser.request("GET", "/reservations/1002")
        assert status == 403 and SECRET not in page
        status, _, page = await browser.request("GET", FULLWIDTH_1002)
        assert status == 400 and SECRET not in page
        status, _, page = await browser.request("GET", ZERO_1002)
        assert status == 403 and SECRET not in page
        assert _reservation_reads(seen) == []
        status, _, page = await browser.request("GET", "/reservations/1003")  # the rule denies only 1002
        assert status == 200 and _reservation_reads(seen) == ["/reservations/1003"]


async def test_naive_pms_normalise_numbers_makes_the_plain_rule_hold_and_forwards_one_spelling(tmp_path):
    policy = _policy(r"^/reservations/1002$", normalise_numbers=True)
    async with _naive(tmp_path, policy) as (env, browser, seen):
        for path in (ZERO_1002, "/reservations/0001002", FULLWIDTH_1002):
            status, _, page = await browser.request("GET", path)
            assert status in (400, 403) and SECRET not in page, path
        assert _reservation_reads(seen) == []
        status, _, _ = await browser.request("GET", "/reservations/01003")
        assert status == 200 and _reservation_reads(seen) == ["/reservations/1003"]  # forwarded as matched


async def test_naive_pms_non_ascii_allowed_by_policy_still_refuses_fullwidth_digits(tmp_path):
    policy = _policy(r"^/reservations/1002$", allow_non_ascii_paths=True)
    async with _naive(tmp_path, policy) as (env, browser, seen):
        status, _, page = await browser.request("GET", FULLWIDTH_1002)
        assert status == 400 and SECRET not in page
        status, _, page = await browser.request("GET", "/echo/Caf%C3%A9")
        assert status == 200 and '"path": "/echo/Caf\\u00e9"' in page


async def test_default_policy_refuses_non_ascii_paths(tmp_path):
    async with _naive(tmp_path, _policy(r"^/reservations/1002$")) as (env, browser, seen):
        status, _, _ = await browser.request("GET", "/echo/Caf%C3%A9")
        assert status == 400
        assert not any(path.startswith("/echo") for _, path, _ in seen)


async def test_demo_pms_fullwidth_digit_is_refused(tmp_path):
    """The demo PMS routes `{id:\\d+}` and Python's `\\d` matches a fullwidth 1 too."""
    async with login_env(tmp_path, policy=_policy(r"^/reservations/0*1002$", naive=False)) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.password("alice")
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            await browser.enroll("alice")
            status, _, page = await browser.request("GET", "/reservations/1003")
            assert status == 200
            for path, refused in ((FULLWIDTH_1002, 400), (ZERO_1002, 403), ("/reservations/1002", 403)):
                status, _, _ = await browser.request("GET", path)
                assert status == refused, path
        finally:
            await browser.close()


# -- canonicalize: refuses, or returns one ASCII, idempotent, dot-free reading -------------

_PIECES = st.sampled_from(
    ["/", "//", ".", "..", "/./", "/../", "%2e", "%2E%2e", "%2f", "%5c", "%00", "%25", "%252e", "%", "%zz", ";", "\\",
     "0", "00", "01002", "1002", "%EF%BC%91", "%C3%A9", "e%CC%81", "%EF%AC%81", "%C3", "\u00e9", "\uff11", "\udcff",
     "?", "#", " ", "%20", "+", "~", "A", "a", "%41", "İ", "%C4%B0", "K"]
)
_RAW = st.lists(st.one_of(_PIECES, st.text(alphabet=string.printable, max_size=3)), max_size=12).map("".join)
_OPTIONS = st.fixed_dictionaries(
    {"case_insensitive": st.booleans(), "allow_non_ascii": st.booleans(), "normalise_numbers": st.booleans()}
)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(_RAW.map(lambda s: "/" + s), _RAW), options=_OPTIONS)
def test_canonicalize_refuses_or_returns_one_idempotent_reading(raw, options):
    try:
        path = canonicalize(raw, **options)
    except AmbiguousPath:
        return
    assert path.encoded.isascii() and path.encoded.startswith("/")
    if not options["allow_non_ascii"]:
        assert path.path.isascii()
    segments = path.path.split("/")
    assert "." not in segments and ".." not in segments
    if options["normalise_numbers"]:
        assert not any(s.isdigit() and s.isascii() and len(s) > 1 and s[0] == "0" for s in segments)
    assert canonicalize(path.encoded, **options) == path
