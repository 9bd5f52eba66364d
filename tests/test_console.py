"""The operator console over HTTP: sign-in with password and TOTP, permissions (403 and an
audit record), CSRF, step-up, sessions ending when permissions change, CSV neutralisation,
/metrics off loopback, and every template in four languages without an untranslated string."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from gateway.admin.console.render import HERE, LANGUAGES, Screen, Table, Translator, catalogs, environment
from gateway.admin.listener import admin_app
from gateway.admin.metrics import Metrics
from gateway.audit.logins import LoginAttempt
from tests.audit_wait import audited
from tests.console_env import ConsoleClient, console_env
from tests.harness import serve_app
from tests.login_env import Browser


async def test_sign_in_needs_password_and_totp_and_the_pages_are_locked_down(tmp_path):
    async with console_env(tmp_path) as console:
        await console.operator("root", "console_admin")
        client = ConsoleClient(console)
        try:
            for path in ("/users", "/logins", "/login/../logins", "/audit/record/1", "/enroll/x"):
                status, headers, _ = await client.get(path)
                assert status in (303, 404) and headers.get("Location", "/login") == "/login", path
            status, headers, page = await client.get("/login")
            assert "script" not in page and "style=" not in page
            assert headers["Cache-Control"] == "no-store"
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert "script-src" not in headers["Content-Security-Policy"]  # no script at all
            status, _, page = await client.post("/login", {"name": "root", "password": "wrong password!!",
                                                           "code": console.code("root")})
            assert status == 401 and "Sign-in failed" in page
            status, _, _ = await client.post("/login", {"name": "root", "password": "correct horse battery",
                                                        "code": "000000"})
            assert status == 401
            status, headers, _ = await client.post("/login", {"name": "root", "password": "correct horse battery",
                                                              "code": console.code("root")})
            assert status == 303, headers
            cookie = next(c for c in client.client.cookie_jar if c.key == "gw_console")  # plain http: no __Host-
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            status, _, page = await client.get("/users")
            assert status == 200 and "root" in page
            # The same code again (replay) is refused, even with the right password.
            other = ConsoleClient(console)
            await other.get("/login")
            code = console.code("root")
            assert (await other.post("/login", {"name": "root", "password": "correct horse battery", "code": code}))[0] == 303
            again = ConsoleClient(console)
            await again.get("/login")
            assert (await again.post("/login", {"name": "root", "password": "correct horse battery", "code": code}))[0] == 401
            await other.close()
            await again.close()
        finally:
            await client.close()


async def test_revoke_without_manage_sessions_is_403_and_audited(tmp_path):
    async with console_env(tmp_path) as console:
        env = console.env
        await console.operator("viewer", "view")
        staff = Browser(env)
        await staff.password("alice")
        await staff.enroll("alice")
        client = ConsoleClient(console)
        try:
            assert await client.login("viewer") == 303
            status, _, page = await client.get("/sessions")
            assert status == 200 and "alice" in page
            session_hash = re.search(r'name="session" value="([0-9a-f]+)"', page).group(1)
            status, _, page = await client.post("/sessions/revoke", {"session": session_hash})
            assert status == 403 and "lacks the permission" in page
            assert len(await env.sessions.sessions_of("alice")) == 1
            (record,) = await audited(env, lambda r: r["decision"] == "console_denied")
            assert record["user"] == "console:viewer" and record["extra"]["permission"] == "manage_sessions"
            assert record["channel"] == "admin"
        finally:
            await client.close()
            await staff.close()


async def test_revoke_ends_the_staff_session_and_is_audited_under_the_operator(tmp_path):
    async with console_env(tmp_path) as console:
        env = console.env
        await console.operator("desk-it", "manage_sessions")
        staff = Browser(env)
        await staff.password("alice")
        await staff.enroll("alice")
        client = ConsoleClient(console)
        try:
            await client.login("desk-it")
            _, _, page = await client.get("/sessions?user=alice")
            session_hash = re.search(r'name="session" value="([0-9a-f]+)"', page).group(1)
            status, headers, _ = await client.post("/sessions/revoke", {"session": session_hash})
            assert status == 303 and headers["Location"] == "/sessions?done=1"
            status, headers, _ = await staff.request("GET", "/reservations")
            assert status in (302, 303) and "/login" in headers["Location"]
            (record,) = await audited(env, lambda r: r["decision"] == "session_revoke")
            assert record["user"] == "console:desk-it" and record["identifiers"] == {"user": "alice"}
            assert record["extra"]["permission"] == "manage_sessions"
        finally:
            await client.close()
            await staff.close()


async def test_forms_need_the_csrf_token_and_step_up_needs_a_fresh_code(tmp_path):
    async with console_env(tmp_path) as console:
        await console.operator("root", "console_admin,manage_users,support_access")
        client = ConsoleClient(console)
        try:
            await client.login("root")
            status, _, page = await client.post("/operators/add", {"name": "eve", "permissions": "view",
                                                                   "code": console.code("root")}, csrf=False)
            assert status == 403 and await console.operators.get("eve") is None
            await client.get("/operators")
            status, _, page = await client.post("/operators/add", {"name": "eve", "permissions": "view", "code": "123456"})
            assert status == 403 and "Second factor needed" in page and await console.operators.get("eve") is None
            status, _, page = await client.post("/operators/add", {"name": "eve", "permissions": "view",
                                                                   "code": console.code("root")})
            assert status == 200 and re.search(r'id="shown-code">[a-z2-9-]{14}<', page)
            assert (await console.operators.get("eve")).permissions == ("view",)
            status, _, page = await client.post("/operators/remove", {"name": "root"})
            assert status == 400 and "last console administrator" in page
        finally:
            await client.close()


async def test_a_permission_change_ends_the_console_session(tmp_path):
    async with console_env(tmp_path) as console:
        await console.operator("root", "console_admin")
        await console.operator("ann", "view,manage_users")
        client = ConsoleClient(console)
        try:
            await client.login("ann")
            assert (await client.get("/users"))[0] == 200
            await console.operators.set_permissions("ann", "view")
            status, headers, _ = await client.get("/users")
            assert status == 303 and headers["Location"] == "/login?ended=1"
        finally:
            await client.close()


async def test_idle_and_absolute_limits_and_a_doubled_cookie(tmp_path):
    async with console_env(tmp_path) as console:
        await console.operator("root", "console_admin")
        client = ConsoleClient(console)
        try:
            await client.login("root")
            console.env.clock.advance(14 * 60)
            assert (await client.get("/"))[0] == 200
            token = next(c for c in client.client.cookie_jar if c.key == "gw_console").value
            # The PMS on the same host set a second gw_console (say, Domain=): neither is honoured.
            import aiohttp

            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
                for header, expected in ((f"gw_console={token}", 200), (f"gw_console={token}; gw_console=x", 303)):
                    async with raw.get(console.url + "/", headers={"Cookie": header}, allow_redirects=False) as r:
                        assert r.status == expected
            console.env.clock.advance(15 * 60)
            assert (await client.get("/"))[0] == 303
            await client.login("root")
            for _ in range(36):  # active all along (8 h 24 min), still ends after 8 hours
                console.env.clock.advance(14 * 60)
                status, _, _ = await client.get("/")
            assert status == 303
        finally:
            await client.close()


async def test_csv_export_neutralises_formula_cells(tmp_path):
    async with console_env(tmp_path) as console:
        env = console.env
        await console.operator("root", "view")
        history = env.services.audit.login_history
        for name in ("=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)", "plain"):
            await history.record(LoginAttempt(name, "192.0.2.9", "failure", None))
        client = ConsoleClient(console)
        try:
            await client.login("root")
            status, headers, body = await client.get("/logins?format=csv&ip=192.0.2.9")
            assert status == 200 and headers["Content-Type"].startswith("text/csv")
            users = sorted(row[1] for row in list(csv.reader(io.StringIO(body)))[1:])
            assert users == ["'+1+1", "'-2", "'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "plain"]
        finally:
            await client.close()


async def test_new_ip_login_flagged_and_searchable_by_address(tmp_path):
    async with console_env(tmp_path) as console:
        history = console.env.services.audit.login_history
        await history.record(LoginAttempt("bob", "81.2.69.160", "success", "password+totp"))
        await history.record(LoginAttempt("bob", "81.2.69.160", "success", "password+totp"))
        await console.operator("root", "view")
        client = ConsoleClient(console)
        try:
            await client.login("root")
            _, _, page = await client.get("/logins?user=bob")
            assert page.count('class="flag"') == 1 and "password + authenticator app" in page
            _, _, page = await client.get("/logins?ip=81.2.69.160&new_ip=1")
            assert page.count("<tr>") == 2  # header and the one new-address login
            _, _, page = await client.get("/logins?lang=fr")
            assert "Historique des connexions" in page
        finally:
            await client.close()


async def test_audit_search_needs_a_range_for_paths(tmp_path):
    async with console_env(tmp_path) as console:
        await console.operator("root", "view")
        client = ConsoleClient(console)
        try:
            await client.login("root")
            _, _, page = await client.get("/audit?path=/reservations")
            assert "needs a start date" in page
            status, _, page = await client.get("/audit?path=/reservations&since=2020-01-01")
            assert status == 200 and "needs a start date" not in page
        finally:
            await client.close()


async def test_metrics_need_a_bearer_token_off_loopback(tmp_path):
    async with console_env(tmp_path) as console:
        import aiohttp

        for token, header, expected in ((None, None, 401), ("s3cret", None, 401), ("s3cret", "Bearer s3cret", 200)):
            app = admin_app(console.env.services, Metrics(), host="192.0.2.1", metrics_token=token)
            async with serve_app(app) as url, aiohttp.ClientSession() as http:
                async with http.get(url + "/metrics", headers={"Authorization": header} if header else {}) as r:
                    assert r.status == expected
        app = admin_app(console.env.services, Metrics(), host="127.0.0.1")
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as r:
                assert r.status == 200


# -- i18n ---------------------------------------------------------------------------------
TEMPLATES = sorted(p.name for p in (HERE / "templates").glob("*.html"))


class _Request:
    """Enough of a request for rendering outside a server."""

    path = "/"
    query: dict = {}


def _context(t: Translator) -> dict:
    from gateway.admin.operators import Operator

    table = Table(["at", "user"], [{"at": "2025-01-01", "user": {"text": "x", "href": "/", "flag": True}}],
                  [[{"action": "/a", "label": "action.forget", "fields": {"a": "b"}, "reason": True, "code": True}]])
    screen = Screen("logins", filters=[{"name": "user", "label": "col.user"}],
                    forms=[{"id": "f", "action": "/x", "title": "action.invite", "submit": "action.invite",
                            "fields": [{"name": "user", "label": "col.user"}]}],
                    table=table, notice="done.forgot", extra={"verify": None, "verify_href": "/", "next_before": 1})
    return {"lang": t.lang, "languages": LANGUAGES, "t": t, "request": _Request(), "query_with": lambda **c: "/",
            "operator": Operator(1, "root", ("view",), True, 1, None, None), "csrf": "c", "property_name": "Hotel",
            "tz": "UTC", "screen": screen, "page": 1, "error": "login.failed", "ended": True, "step": 2,
            "name": "n", "enroll_code": "c", "secret": "S", "qr": "<svg></svg>", "title": "error.forbidden",
            "text": "done.invite", "values": {"user": "u", "until": "t"}, "secret_text": "code", "back": "/",
            "fields": {"a": "b"}, "record_id": 1, "files": ["p.yaml"], "groups": {"g": "{}"}, "default_group": "g",
            "loaded_at": "now", "checked_at": "now", "rejection": None, "chart": "", "reload_at": "now",
            "stats": [("dash.sessions", 1, "/")]}


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_in_every_language_without_a_missing_key(template, lang):
    t = Translator(lang)
    html = environment.get_template(template).render(**_context(t))
    assert not t.missing, f"{template} [{lang}] lacks {sorted(t.missing)}"
    assert "<html" in html or template != "layout.html"


def test_templates_hold_no_literal_text_and_catalogs_agree():
    """Visible words come from the catalogs only: text between tags in the templates is
    markup, jinja or punctuation; every language has every key."""
    for name in TEMPLATES:
        source = (HERE / "templates" / name).read_text()
        stripped = re.sub(r"{%.*?%}|{{.*?}}|{#.*?#}", "", source, flags=re.S)
        for text in re.findall(r">([^<]+)<", stripped):
            assert not re.search(r"[A-Za-z]{2,}", text), f"{name}: literal text {text.strip()!r}"
        for attribute in re.findall(r'(?:placeholder|aria-label|title|alt)="([^"]*)"', stripped):
            assert not re.search(r"[A-Za-z]{2,}", attribute), f"{name}: literal attribute {attribute!r}"
    keys = set(catalogs()["en"])
    for lang in LANGUAGES:
        assert set(catalogs()[lang]) == keys, lang
    used = set()
    for path in Path(HERE).glob("*.py"):
        used |= set(re.findall(r'"((?:nav|col|action|done|error|field|dash|filter|login|enroll|audit|policy|'
                               r'outbound)\.[a-z_0-9-]+)"', path.read_text()))
    used = {key for key in used if not key.endswith(".html")}
    assert used <= keys, used - keys
