"""Hidden sections (issue 12 item 4): the access rule's 403 protects, `hide_links` hides.

Over HTTP against a real gateway and the demo PMS extended with a recorder (which paths
reached the PMS) and pages sent gzip-, br- and deflate-compressed, without a charset, and
broken: the gateway's injections work on every one it can decode and leave the rest
byte for byte as the PMS sent them.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import zlib

import aiohttp
import brotli
import pytest
from aiohttp import web

from gateway.access.hidden_links import hiding_stylesheet, literal_prefix
from gateway.demo import DemoSettings, create_app
from gateway.policy import load_policy
from gateway.policy.schema import AccessRule, GroupPolicy
from gateway.proxy.page_injection import MAX_WIRE_BYTES
from tests.harness import serve_app
from tests.login_env import Browser, login_env

PAGE = b"<!DOCTYPE html><html><head><title>Menu</title></head><body><a href=\"/reports\">Reports</a></body></html>"
SEEN = web.AppKey("seen", list)


def _encoded(kind: str) -> tuple[bytes, dict[str, str]]:
    html = {"Content-Type": "text/html; charset=utf-8"}
    match kind:
        case "gzip":
            return gzip.compress(PAGE, mtime=0), {**html, "Content-Encoding": "gzip"}
        case "br":
            return brotli.compress(PAGE), {**html, "Content-Encoding": "br"}
        case "deflate":
            return zlib.compress(PAGE), {**html, "Content-Encoding": "deflate"}
        case "raw-deflate":
            encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
            return encoder.compress(PAGE) + encoder.flush(), {**html, "Content-Encoding": "deflate"}
        case "gzip-then-br":
            return brotli.compress(gzip.compress(PAGE, mtime=0)), {**html, "Content-Encoding": "gzip, br"}
        case "no-charset":
            return PAGE, {"Content-Type": "text/html"}
        case "no-charset-gzip":
            return gzip.compress(PAGE, mtime=0), {"Content-Type": "text/html", "Content-Encoding": "gzip"}
        case "broken-gzip":
            return b"\x1f\x8b\x08\x00 not really gzip <head></head>", {**html, "Content-Encoding": "gzip"}
        case "gzip-trailing-bytes":
            return gzip.compress(PAGE, mtime=0) + b"<script>", {**html, "Content-Encoding": "gzip"}
        case "unknown-coding":
            return PAGE, {**html, "Content-Encoding": "zstd"}
        case "utf-16":
            return PAGE.decode().encode("utf-16"), {"Content-Type": "text/html"}
        case "iso-2022-jp":
            return PAGE.replace(b"Menu", "メニュー".encode("iso2022_jp")), {"Content-Type": "text/html"}
    raise AssertionError(kind)


async def _encoded_page(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind == "huge-chunked":  # larger than the gateway reads: relayed whole, untouched
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"<html><head></head><body>")
        filler = b"x" * 65536
        for _ in range(MAX_WIRE_BYTES // len(filler) + 2):
            await response.write(filler)
        await response.write(b"</body></html>")
        await response.write_eof()
        return response
    body, headers = _encoded(kind)
    return web.Response(body=body, headers=headers)


@web.middleware
async def _record(request: web.Request, handler):
    request.app[SEEN].append(request.path)
    return await handler(request)


@contextlib.asynccontextmanager
async def _env(tmp_path, compress: bool = False):
    """The default policy (reception: /reports denied, hide_links) over the recording PMS."""
    app = create_app(DemoSettings(compress=compress))
    app[SEEN] = []
    app.middlewares.append(_record)
    app.router.add_get("/encoded/{kind}", _encoded_page)
    async with serve_app(app) as pms_url, login_env(tmp_path, pms_url=pms_url) as env:
        env.seen = app[SEEN]
        yield env


@contextlib.asynccontextmanager
async def _signed_in(env, user: str):
    browser = Browser(env)
    try:
        await browser.password(user)
        await browser.enroll(user)
        yield browser
    finally:
        await browser.close()


async def _raw(browser: Browser, path: str) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with browser.client.get(browser.env.url + path, auto_decompress=False, allow_redirects=False) as response:
        return response.status, response.headers, await response.read()


def _link(page: str) -> str | None:
    found = re.search(r'<link rel="stylesheet" href="(/_gateway/hide/[0-9a-f]{16}\.css)">', page)
    return found.group(1) if found else None


# -- the shipped policies ---------------------------------------------------------------------


@pytest.mark.parametrize("files", [("policies/default.yaml",), ("policies/default.yaml", "policies/strict.yaml")])
def test_shipped_policies_hide_reports_from_reception(files):
    policy = load_policy(*files)
    access = policy.groups["reception"].access
    assert access.hide_links and [rule.deny for rule in access.rules] == ["^/reports(/|$)"]
    assert policy.groups["management"].access.rules == []


# -- HTTP: the 403 protects, the stylesheet hides ----------------------------------------------


async def test_reports_typed_by_hand_get_the_gateways_403_and_never_reach_the_pms(tmp_path):
    async with _env(tmp_path) as env, _signed_in(env, "alice") as alice:
        for path in ("/reports", "/reports/", "/reports?week=2", "/reports/2026"):
            status, _, page = await alice.request("GET", path)
            assert status == 403 and "Access denied" in page, (path, page)
            assert "PMS version" not in page  # the gateway's page, not the PMS's
        status, _, _ = await alice.request("GET", "/reservations")
        assert status == 200
        assert not [path for path in env.seen if path.startswith("/reports")]
        assert "/reservations" in env.seen  # the recorder does see what is forwarded


async def test_stylesheet_link_for_reception_and_not_for_management(tmp_path):
    async with _env(tmp_path) as env:
        async with _signed_in(env, "alice") as alice:
            status, _, page = await alice.request("GET", "/reservations")
            assert status == 200 and 'href="/reports"' in page  # the PMS's own menu, unchanged
            link = _link(page)
            assert link is not None and page.index(link) < page.index("</head>")
            status, headers, css = await alice.request("GET", link)
            assert status == 200 and headers["Content-Type"].startswith("text/css")
            assert 'a[href="/reports"]' in css and 'form[action^="/reports/"]' in css and "display: none" in css
        async with _signed_in(env, "manager") as manager:
            status, _, page = await manager.request("GET", "/reservations")
            assert status == 200 and _link(page) is None and 'href="/reports"' in page
            status, _, page = await manager.request("GET", "/reports")
            assert status == 200 and "Occupancy report" in page
            status, _, _ = await manager.request("GET", "/_gateway/hide/0000000000000000.css")
            assert status == 404


async def test_the_stylesheet_reaches_gzip_answers_of_the_pms(tmp_path):
    async with _env(tmp_path, compress=True) as env, _signed_in(env, "alice") as alice:
        status, headers, raw = await _raw(alice, "/reservations")
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert int(headers["Content-Length"]) == len(raw)
        page = gzip.decompress(raw).decode()
        assert _link(page) is not None and "Logged in as <b>alice</b>" in page


@pytest.mark.parametrize(
    "kind", ["gzip", "br", "deflate", "raw-deflate", "gzip-then-br", "no-charset", "no-charset-gzip"]
)
async def test_injection_decodes_and_re_encodes_every_coding(tmp_path, kind):
    body, sent = _encoded(kind)
    async with _env(tmp_path) as env, _signed_in(env, "alice") as alice:
        status, headers, raw = await _raw(alice, f"/encoded/{kind}")
        assert status == 200
        assert headers.get("Content-Encoding") == sent.get("Content-Encoding")
        assert int(headers["Content-Length"]) == len(raw) and raw != body
        page = raw
        for coding in reversed([c.strip() for c in headers.get("Content-Encoding", "").split(",") if c]):
            page = {"gzip": gzip.decompress, "br": brotli.decompress}.get(coding, _inflate)(page)
        link = _link(page.decode())
        assert link is not None
        assert page == PAGE.replace(b"</head>", f'<link rel="stylesheet" href="{link}"></head>'.encode())


@pytest.mark.parametrize(
    "kind", ["broken-gzip", "gzip-trailing-bytes", "unknown-coding", "utf-16", "iso-2022-jp"]
)
async def test_what_the_gateway_cannot_be_sure_of_passes_untouched(tmp_path, kind):
    body, sent = _encoded(kind)
    async with _env(tmp_path) as env, _signed_in(env, "alice") as alice:
        status, headers, raw = await _raw(alice, f"/encoded/{kind}")
        assert status == 200 and raw == body
        assert headers.get("Content-Encoding") == sent.get("Content-Encoding")


async def test_a_page_larger_than_the_gateway_reads_is_relayed_whole(tmp_path):
    async with _env(tmp_path) as env, _signed_in(env, "alice") as alice:
        status, _, raw = await _raw(alice, "/encoded/huge-chunked")
        assert status == 200 and raw.startswith(b"<html><head></head><body>xxx") and raw.endswith(b"</body></html>")
        assert len(raw) == len(b"<html><head></head><body></body></html>") + 65536 * (MAX_WIRE_BYTES // 65536 + 2)


async def test_session_notice_reaches_a_gzip_login_page(tmp_path):
    async with _env(tmp_path, compress=True) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.request("GET", "/reservations")
            assert status == 303
            status, headers, raw = await _raw(browser, "/login")
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            page = gzip.decompress(raw).decode()
            assert 'id="gateway-notice"' in page and page.index("gateway-notice") > page.index("<body")
        finally:
            await browser.close()


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -15)


# -- which rules become selectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^/reports", ("/reports", ("^=",))),
        ("^/reports$", ("/reports", ("=", "?", "#"))),
        ("^/reports(/|$)", ("/reports", ("=", "/", "?", "#"))),
        ("^/reports(?:/|$)", ("/reports", ("=", "/", "?", "#"))),
        (r"^/admin\.php(/.*)?$", ("/admin.php", ("=", "/", "?", "#"))),
        ("^/reports/", ("/reports/", ("^=",))),
        ("/reports", None),  # unanchored: matches /x/reports too
        ("^/reports?", None),  # the s is optional
        (r"^/reservations/\d+", None),
        ("^/(reports|admin)", None),
        ("^/reports.*csv", None),
        ("^/reports(/|$)|^/admin", None),
        ('^/a"b', None),  # nothing a CSS string would need escaped for the PMS's hrefs
        ("^reports", None),  # not a path
    ],
)
def test_literal_prefix_converts_only_exact_forms(pattern, expected):
    assert literal_prefix(pattern) == expected


def _rules(*rules: dict) -> list[AccessRule]:
    return GroupPolicy.model_validate({"access": list(rules)}).access.rules


def test_earlier_allow_rules_are_exceptions_and_an_unconvertible_one_stops():
    css = hiding_stylesheet(_rules({"allow": "^/reports/daily$"}, {"deny": "^/reports"}))
    assert 'a[href^="/reports"]:not([href="/reports/daily"], [href^="/reports/daily?"], [href^="/reports/daily#"])' in css
    assert hiding_stylesheet(_rules({"allow": r"^/reports/\d+$"}, {"deny": "^/reports"})) == ""
    assert hiding_stylesheet(_rules({"deny": r"^/reservations/\d+/edit"}, {"deny": "^/admin"})).count("/admin") == 3
    assert hiding_stylesheet(_rules({"allow": ".*"})) == ""


def test_methods_and_case_insensitive_paths():
    css = hiding_stylesheet(_rules({"deny": "^/reservations/", "methods": ["POST"]}))
    assert 'form[method="post" i][action^="/reservations/"]' in css and "a[" not in css
    css = hiding_stylesheet(_rules({"deny": "^/admin"}), case_insensitive=True)
    assert 'a[href^="/admin" i]' in css


def test_access_accepts_the_list_and_the_mapping_form():
    assert GroupPolicy.model_validate({"access": [{"deny": "^/x"}]}).access.hide_links is False
    group = GroupPolicy.model_validate({"access": {"rules": [{"deny": "^/x"}], "hide_links": True}})
    assert group.access.hide_links and group.access.rules[0].deny == "^/x"
