"""`pms-gateway login discover`: the rule it prints for the demo PMS works in a real gateway;
for a very different PMS (JSON login, meta CSRF token, redirect back on failure) it reads
the right request and failure signal; its errors are one line with exit status 2."""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.demo import DemoSettings, create_app
from gateway.policy import load_policy
from tests.browser import BROWSER_TESTS, page  # noqa: F401 (page is a fixture)
from tests.discover_pms import USERS, discover_pms
from tests.harness import free_port, serve_app
from tests.login_env import DEMO_PASSWORDS, Browser, login_env

DEFAULT_POLICY = Path("policies/default.yaml")


async def run_discover(*args: str, env: dict[str, str] | None = None):
    """The real command, as an operator runs it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, app, ["login", "discover", *args], env=env)


def with_login_section(rule: str, tmp_path: Path) -> Path:
    """A copy of the default policy whose `login:` section is the printed rule."""
    lines = DEFAULT_POLICY.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("login:"))
    end = next(i for i in range(start + 1, len(lines)) if re.match(r"[A-Za-z_]", lines[i]))
    path = tmp_path / "policy.yaml"
    path.write_text("".join(lines[:start]) + rule + "\n" + "".join(lines[end:]))
    return path


async def login_through_gateway(policy_file: Path, pms_url: str, tmp_path: Path) -> None:
    async with login_env(tmp_path, policy=load_policy(policy_file), pms_url=pms_url) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.password("alice")
            assert (status, headers.get("Location")) in ((302, "/_gateway/2fa"), (303, "/_gateway/2fa"))
            await browser.enroll("alice")
            status, _, page = await browser.request("GET", "/reservations")
            assert status == 200 and "Logged in as <b>alice</b>" in page
            assert "PMSSESSID" not in " ".join(browser.set_cookies)  # vaulted, never sent to the browser
            status, _, _ = await browser.password("alice", "wrong-password")
            assert status == 200  # the PMS's own failure page, passed through
        finally:
            await browser.close()


async def test_demo_rule_without_credentials_works_in_the_gateway(tmp_path):
    async with serve_app(create_app(DemoSettings())) as pms:
        result = await run_discover(pms + "/")
        assert result.exit_code == 0, result.output
        rule = result.stdout
        login = yaml.safe_load(rule)["login"]
        assert login["path"] == "/login" and login["format"] == "form"
        assert (login["username_field"], login["password_field"]) == ("username", "password")
        assert login["success"]["failure_text"] == "Invalid username or password"
        assert re.search(login["success"]["redirect_not_to"], "/login")
        assert not re.search(login["success"]["redirect_not_to"], "/reservations")
        assert "csrf_token" in rule and "PMSPRELOGIN" in rule and "Real login: not tried" in rule
        await login_through_gateway(with_login_section(rule, tmp_path), pms, tmp_path)


@BROWSER_TESTS[0]  # pytest.mark.browser
@BROWSER_TESTS[1]  # skipped without Chromium
async def test_the_login_browser_test_passes_unchanged_on_the_discovered_rule(page, tmp_path, monkeypatch):  # noqa: F811
    """tests/test_browser_login.py's enroll-log-out-log-in test, run as is, in front of a
    PMS the gateway knows only through the rule `login discover` printed (no real login)."""
    from tests import test_browser_login  # here, not at the top: pytest would collect its tests twice

    async with serve_app(create_app(DemoSettings())) as pms:
        result = await run_discover(pms + "/login")
        assert result.exit_code == 0, result.output
        policy = load_policy(with_login_section(result.stdout, tmp_path))
        monkeypatch.setattr(test_browser_login, "login_env", functools.partial(login_env, policy=policy, pms_url=pms))
        await test_browser_login.test_enroll_by_invite_then_log_out_and_in_again(page, tmp_path)


async def test_demo_rule_with_a_real_login_learns_the_session_cookie(tmp_path):
    async with serve_app(create_app(DemoSettings())) as pms:
        password = DEMO_PASSWORDS["manager"]
        result = await run_discover(pms + "/login", "--username", "manager", "--password-env", "PMS_PW",
                                    env={"PMS_PW": password})
        assert result.exit_code == 0, result.output
        assert password not in result.output
        login = yaml.safe_load(result.stdout)["login"]
        assert login["success"]["status"] == [302]
        assert login["success"]["cookie_set"] == "PMSSESSID"
        assert login["upstream_session_cookies"] == ["PMSSESSID"]
        assert login["logout_paths"] == ["/logout"]
        assert login["identity"]["path"] == "/reservations"
        assert re.search(login["identity"]["pattern"], "Logged in as <b>alice</b>").group(1) == "alice"
        policy_file = with_login_section(result.stdout, tmp_path)
        await login_through_gateway(policy_file, pms, tmp_path)


async def test_json_login_with_meta_csrf_and_redirect_back(tmp_path):
    async with serve_app(discover_pms()) as pms:
        result = await run_discover(pms + "/")  # `/` redirects to /desk, then to /signin
        assert result.exit_code == 0, result.output
        login = yaml.safe_load(result.stdout)["login"]
        assert (login["path"], login["method"], login["format"]) == ("/api/session", "POST", "json")
        assert login["page"] == "/signin"  # signed-out browsers go to the page, not the JSON endpoint
        assert (login["username_field"], login["password_field"]) == ("login", "passphrase")
        success = login["success"]
        assert re.search(success["redirect_not_to"], "/signin")  # the failure's redirect back
        assert not re.search(success["redirect_not_to"], "/desk")
        assert 200 in success["status"]
        assert "303 redirect to /signin?error=1" in result.stdout
        assert "header X-CSRF-Token from <meta name='csrf-token'>" in result.stdout
        assert "^/signin$" in login["public_paths"] and "^/assets/" in login["public_paths"]
        load_policy(with_login_section(result.stdout, tmp_path))

        result = await run_discover(pms + "/signin", "--username", "ana", "--password-env", "SPA_PW",
                                    env={"SPA_PW": USERS["ana"]})
        assert result.exit_code == 0, result.output
        assert USERS["ana"] not in result.output
        login = yaml.safe_load(result.stdout)["login"]
        assert login["success"] == {"status": [200], "redirect_not_to": None, "cookie_set": "desk_session"}
        assert login["upstream_session_cookies"] == ["desk_session"]
        assert login["logout_paths"] == ["/signout"]
        assert re.search(login["identity"]["pattern"], 'Signed in: <span class="who">ana</span>').group(1) == "ana"
        assert "logged out again" in result.stdout
        load_policy(with_login_section(result.stdout, tmp_path))


async def test_errors_are_one_line_with_the_url_and_exit_status_2(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}/login"
    async with serve_app(discover_pms()) as pms:
        cases = {
            nowhere: "cannot reach",
            pms + "/about": "no login form found",
            pms + "/missing": "answered 404",
        }
        for url, message in cases.items():
            result = await run_discover(url)
            assert result.exit_code == 2, result.output
            assert message in result.stderr and url in result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
        result = await run_discover(pms + "/signin", "--username", "ana", "--password-env", "UNSET_VAR", env={})
        assert result.exit_code == 2 and "UNSET_VAR is unset" in result.stderr
        result = await run_discover(pms + "/signin", "--username", "ana", "--password-env", "SPA_PW",
                                    env={"SPA_PW": "not-her-passphrase"})
        assert result.exit_code == 2 and "answered like the wrong one" in result.stderr
        assert "not-her-passphrase" not in result.output


def test_a_webforms_style_page_is_read_as_the_browser_would_send_it():
    """No labels to go by: ids, a named submit button, a verification token, a legacy charset."""
    from gateway.discover.page import login_form, parse_page

    html = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>
    <body><form method="post" action="./Logon.aspx?ReturnUrl=%2f" id="form1">
    <input type="hidden" name="__RequestVerificationToken" value="tok">
    <input type="hidden" name="__VIEWSTATE" value="vs"><input type="hidden" name="ReturnUrl" value="/">
    <input name="txtSearch" type="text" placeholder="Search">
    <input name="ctl00$Main$txtUser" type="text" id="txtUser">
    <input name="ctl00$Main$txtPwd" type="password" id="txtPwd">
    <input type="checkbox" name="chkRemember"><input type="submit" name="ctl00$Main$btnLogon" value="Log on">
    </form><a href="/Account/LogOff.aspx">Abmelden</a></body></html>"""
    form = login_form(parse_page("http://pms.test/Account/Logon.aspx", html), [])
    assert (form.url, form.method, form.format) == ("http://pms.test/Account/Logon.aspx?ReturnUrl=%2f", "POST", "form")
    assert (form.username_field, form.password_field) == ("ctl00$Main$txtUser", "ctl00$Main$txtPwd")
    assert form.other_fields == {"__RequestVerificationToken": "tok", "__VIEWSTATE": "vs", "ReturnUrl": "/",
                                 "ctl00$Main$btnLogon": "Log on"}
    assert form.csrf_fields == ["__RequestVerificationToken"] and form.next_fields == ["ReturnUrl"]
    assert form.charset == "windows-1252"
    assert parse_page("http://pms.test/", html).logout_links == ["/Account/LogOff.aspx"]
