"""Vendor support access: a support account signs in only with an operator's temporary code."""

from __future__ import annotations

import asyncio
import getpass
import re
from pathlib import Path

import pytest
import yaml

from gateway.audit.logins import recent_logins
from gateway.auth.challenge import ChallengePages
from gateway.auth.login import LoginInterceptor
from gateway.auth.support import SupportAccess, SupportRefused
from gateway.sessions.revocation import end_user_sessions
from tests.login_env import Browser, login_env

PASSWORD = "support-demo-pw"
NO_GRANT = "Support access needs a code from the hotel&#39;s IT"


def challenge_of(env) -> ChallengePages:
    return next(a for a in env.addons if isinstance(a, ChallengePages))


def support_of(env) -> SupportAccess:
    return next(a for a in env.addons if isinstance(a, LoginInterceptor)).support


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def support_login(env, browser: Browser, code: str) -> tuple[int, dict, str]:
    status, headers, _ = await browser.password("support", PASSWORD)
    assert headers.get("Location") == "/_gateway/2fa", (status, headers)
    _, page = await browser.challenge_form()
    assert 'name="access_code"' in page and 'name="code"' not in page  # no TOTP for support
    return await browser.submit(action="support", access_code=code)


async def test_granted_code_opens_one_session_that_ends_with_the_grant(tmp_path):
    async with login_env(tmp_path) as env:
        support = support_of(env)
        grant, code = await support.grant("support", operator="it-admin", valid_for=3600, reason="ticket 4711")
        assert grant.operator == "it-admin" and grant.reason == "ticket 4711"
        browser = Browser(env)
        try:
            status, _, page = await support_login(env, browser, "aaaa-bbbb-cccc")  # wrong code counts
            assert status == 401 and "not valid" in page and "4 attempt(s) left" in page
            status, headers, _ = await browser.submit(action="support", access_code=code.upper())
            assert status in (302, 303), status
            status, _, page = await browser.request("GET", "/reservations")
            assert status == 200
            history = await recent_logins(env.services.database, "support")
            outcomes = [(h["outcome"], h["login_type"]) for h in history]
            assert ("success", "support_access") in outcomes
            assert ("support_granted", "support_access") in outcomes
            assert any("it-admin" in (h["reason"] or "") for h in history if h["outcome"] == "support_granted")
            session = (await env.sessions.sessions_of("support"))[0]
            assert session.login_type == "support_access"
            assert session.expires_at == pytest.approx(grant.expires_at.timestamp(), abs=0.01), (session, grant, env.clock())
            assert await env.pms_users_alive() == ["support"]

            # The grant ends the session, earlier than the group's 12 h, and the PMS session too.
            for step in (1200, 1200, 1199):  # active, so never idle: 3599 s in all
                env.clock.advance(step)
                status, _, _ = await browser.request("GET", "/reservations")
                assert status == 200
            env.clock.advance(1.001)  # expiry times are kept to the microsecond
            status, headers, _ = await browser.request("GET", "/reservations")
            assert status in (302, 303) and headers["Location"].startswith("/login")
            await wait_until(lambda: _none_alive(env))
        finally:
            await browser.close()

        # The code worked once: a new login has no valid grant left.
        second = Browser(env)
        try:
            status, _, page = await second.password("support", PASSWORD)
            assert status == 403 and NO_GRANT in page
            assert await support.redeem("support", code) is None
        finally:
            await second.close()


async def test_code_cannot_be_reused(tmp_path):
    async with login_env(tmp_path) as env:
        support = support_of(env)
        _, code = await support.grant("support", operator="it-admin", valid_for=7200)
        # A second grant keeps the first one's code from being used later: one code at a time.
        first, second = Browser(env), Browser(env)
        try:
            status, _, _ = await support_login(env, first, code)
            assert status in (302, 303)
            _, fresh = await support.grant("support", operator="it-admin", valid_for=7200)
            status, headers, _ = await second.password("support", PASSWORD)
            assert headers.get("Location") == "/_gateway/2fa"
            status, _, page = await second.submit(action="support", access_code=code)
            assert status == 401 and "already used" in page
            status, _, _ = await second.submit(action="support", access_code=fresh)
            assert status in (302, 303)
        finally:
            await first.close()
            await second.close()


async def test_grant_needs_a_support_account_and_a_short_duration(tmp_path):
    """Who may grant is the console's `support_access` permission (tests/test_console.py)
    or the command line on the host; the service itself checks account and duration."""
    async with login_env(tmp_path) as env:
        support = support_of(env)
        with pytest.raises(SupportRefused, match="not a support account"):
            await support.grant("alice", operator="it-admin", valid_for=3600)
        with pytest.raises(SupportRefused, match="max_duration"):
            await support.grant("support", operator="it-admin", valid_for=8 * 3600 + 1)
        with pytest.raises(SupportRefused, match="not a support account"):
            await support.revoke("bob", operator="it-admin")
        assert await support.list() == []


async def test_without_a_grant_the_login_is_refused_and_the_pms_session_ended(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            status, _, page = await browser.password("support", PASSWORD)
            assert status == 403 and NO_GRANT in page
            assert browser.cookie("gw_pending") is None
            await wait_until(lambda: _none_alive(env))
            status, _, _ = await browser.request("GET", "/reservations")
            assert status in (302, 303)
            history = await recent_logins(env.services.database, "support")
            assert [(h["outcome"], h["login_type"]) for h in history] == [("refused", "support_access")]
        finally:
            await browser.close()


async def test_expired_grant_is_refused(tmp_path):
    async with login_env(tmp_path) as env:
        support = support_of(env)
        _, code = await support.grant("support", operator="it-admin", valid_for=60)
        browser = Browser(env)
        try:
            # Valid when the password is checked, expired by the time the code is typed.
            status, headers, _ = await browser.password("support", PASSWORD)
            assert headers.get("Location") == "/_gateway/2fa"
            env.clock.advance(60)
            status, _, page = await browser.submit(action="support", access_code=code)
            assert status == 401 and "expired" in page
            # And a new login finds no valid grant at all.
            status, _, page = await browser.password("support", PASSWORD)
            assert status == 403 and NO_GRANT in page
            # That refused login's PMS session ended at once; the first one still waits for its code.
            await wait_until(lambda: _alive(env, ["support"]))
            env.clock.advance(300)
            assert await challenge_of(env).sweep() == 1
            await wait_until(lambda: _none_alive(env))
        finally:
            await browser.close()


async def test_revoke_ends_the_support_session(tmp_path):
    async with login_env(tmp_path) as env:
        support = support_of(env)
        _, code = await support.grant("support", operator="it-admin", valid_for=3600)
        browser = Browser(env)
        try:
            status, _, _ = await support_login(env, browser, code)
            assert status in (302, 303)
            assert (await browser.request("GET", "/reservations"))[0] == 200
            assert await support.revoke("support", operator="it-admin") == 1
            assert await end_user_sessions(env.services.store, "support", reason="revoked") == 1
            await env.sessions.finish_revoked()
            status, _, _ = await browser.request("GET", "/reservations")
            assert status in (302, 303)
            await wait_until(lambda: _none_alive(env))
            grants = await support.list()
            assert grants[0].revoked_at is not None and grants[0].state(support._now()) == "revoked"
            outcomes = [h["outcome"] for h in await recent_logins(env.services.database, "support")]
            assert "support_revoked" in outcomes
        finally:
            await browser.close()


async def test_other_accounts_keep_their_second_factor(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            _, headers, _ = await browser.password("alice")
            assert headers.get("Location") == "/_gateway/2fa"
            _, page = await browser.challenge_form()
            assert 'name="access_code"' not in page
        finally:
            await browser.close()


async def _alive(env, users: list[str]) -> bool:
    return await env.pms_users_alive() == users


async def _none_alive(env) -> bool:
    return await env.pms_users_alive() == []


# -- commands ----------------------------------------------------------------------------
@pytest.fixture
def cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in __import__("os").environ if n.startswith("PMS_GATEWAY_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                      "policy_paths": [str(Path("policies/default.yaml").resolve())]}))
    return config


def test_support_commands(cli_config: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["support", *args, "-c", str(cli_config)])
        assert result.exit_code == code, result.output
        return result.output

    assert "no support access granted yet" in cli("list")
    out = cli("grant", "support", "--operator", "it-admin", "--for", "2h", "--reason", "ticket 4711")
    assert re.search(r"Support access code for support: [a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", out)
    assert "max_duration" in cli("grant", "support", "--operator", "it-admin", "--for", "9h", code=1)
    assert "not a support account" in cli("grant", "bob", "--operator", "it-admin", "--for", "1h", code=1)
    listing = cli("list")
    assert "support" in listing and "valid" in listing and "ticket 4711" in listing
    assert f"os:{getpass.getuser()} as it-admin" in listing  # the OS user; --operator only a label
    assert "revoked 1 grant(s) of support" in cli("revoke", "support", "--operator", "it-admin")
    assert "revoked" in cli("list")
