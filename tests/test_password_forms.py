"""The PMS's other password forms through the gateway (`login.password_forms`), over HTTP
against the demo PMS: re-authentication (with the gateway's second factor asked again),
password change, reset by e-mailed link (sent through the gateway's SMTP relay to an
aiosmtpd sink). None of them may sign anyone in or change who is signed in."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
import pytest
from sqlalchemy import select

from gateway.db import audit_records
from gateway.demo import DemoSettings, create_app
from gateway.policy import load_policy
from gateway.redact.engine import Redactor
from gateway.redact.settings import SmarthostSettings, SmtpRelaySettings
from gateway.redact.smtp_relay import start_smtp_relay
from tests.harness import free_port, serve_app
from tests.login_env import Browser, login_env
from tests.test_login_flow import enrolled, new_browser
from tests.test_smtp_relay import Audit, Sink, delivery_for, start_sink

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@contextlib.asynccontextmanager
async def mail_world(tmp_path, policy=None):
    """Sink <- the gateway's SMTP relay <- demo PMS; a gateway in front of the PMS."""
    sink = Sink()
    controller = start_sink(free_port(), sink)
    default = load_policy("policies/default.yaml")
    relay_settings = SmtpRelaySettings(enabled=True, port=0, smarthost=SmarthostSettings(port=controller.port, timeout=5))
    relay = await start_smtp_relay(
        relay_settings, Redactor(default.notifications), audit=Audit(),
        delivery=delivery_for(relay_settings, tmp_path / "relay"),
    )
    try:
        settings = DemoSettings(smtp_port=relay.sockets[0].getsockname()[1], send_timeout=5.0)
        async with serve_app(create_app(settings)) as pms_url:
            async with login_env(tmp_path, policy=policy or default, pms_url=pms_url) as env:
                env.sink = sink
                yield env
    finally:
        relay.close()
        await relay.wait_closed()
        controller.stop()


async def until(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


async def reset_link(env, browser: Browser, user: str) -> str:
    """Ask for a reset link through the gateway; the path it leads to, read from the e-mail."""
    status, _, page = await browser.request("POST", "/password/forgot", data=f"username={user}", headers=dict(FORM))
    assert status == 200 and "on its way" in page, page
    await until(lambda: env.sink.messages)
    text = env.sink.messages.pop().get_content()
    return re.search(r"https?://[^/\s]+(/password/reset/\S+)", text).group(1)


async def audit_rows(env) -> list:
    async with env.services.database.connect() as conn:
        return (await conn.execute(select(audit_records).order_by(audit_records.c.seq))).all()


def no_step_up(policy):
    login = policy.login
    forms = [f.model_copy(update={"step_up": False}) for f in login.password_forms]
    return policy.model_copy(update={"login": login.model_copy(update={"password_forms": forms})})


# -- reauth -----------------------------------------------------------------------------------


async def test_reauth_asks_the_second_factor_again_then_replays_the_form_once(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        _, _, page = await browser.request("GET", "/reservations/1001/erase")
        body = f"csrf_token={csrf_of(page)}&password=alice-demo-pw"
        status, headers, _ = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
        assert (status, headers["Location"]) == (303, "/_gateway/2fa")
        assert "Oliver Bennett" in (await browser.request("GET", "/reservations/1001"))[2]  # not yet forwarded

        env.clock.advance(30)
        status, headers, _ = await browser.submit(action="verify", code=env.code("alice"))
        assert (status, headers["Location"]) == (307, "/reservations/1001/erase")
        # The browser posts the challenge form's body again (307); the gateway forwards the held form.
        status, headers, _ = await browser.request("POST", "/reservations/1001/erase", data="csrf=x&code=1", headers=dict(FORM))
        assert (status, headers["Location"]) == (302, "/reservations/1001")
        assert "Erased guest" in (await browser.request("GET", "/reservations/1001"))[2]
        assert browser.cookie("gw_step_up") in (None, "")

        # One use: the same re-post is now read as a form of its own, which has no password.
        status, _, _ = await browser.request("POST", "/reservations/1001/erase", data="csrf=x&code=1", headers=dict(FORM))
        assert status == 400


async def test_reauth_without_a_session_is_refused_even_on_a_public_path(tmp_path):
    policy = load_policy("policies/default.yaml")
    public = [*policy.login.public_paths, r"^/reservations/\d+/erase$"]
    policy = policy.model_copy(update={"login": policy.login.model_copy(update={"public_paths": public})})
    async with login_env(tmp_path, policy=policy) as env:
        browser = await new_browser(env)
        status, headers, _ = await browser.request(
            "POST", "/reservations/1001/erase", data="password=alice-demo-pw", headers=dict(FORM)
        )
        assert status == 401


async def test_a_password_form_naming_another_user_is_refused(tmp_path):
    policy = load_policy("policies/default.yaml")
    forms = [f.model_copy(update={"username_field": "username"}) if f.kind == "change" else f
             for f in policy.login.password_forms]
    policy = policy.model_copy(update={"login": policy.login.model_copy(update={"password_forms": forms})})
    async with login_env(tmp_path, policy=policy) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        _, _, page = await browser.request("GET", "/account/password")
        base = f"csrf_token={csrf_of(page)}&old_password=alice-demo-pw&new_password=x&new_password2=y"
        status, _, _ = await browser.request("POST", "/account/password", data=base + "&username=bob", headers=dict(FORM))
        assert status == 403
        status, _, _ = await browser.request("POST", "/account/password", data=base + "&username=%20ALICE", headers=dict(FORM))
        assert status == 200  # forwarded: the PMS answers that the new passwords differ
        # A login field the reauth form does not declare never rides along.
        _, _, page = await browser.request("GET", "/reservations/1001/erase")
        body = f"csrf_token={csrf_of(page)}&password=alice-demo-pw&username=bob"
        status, _, _ = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
        assert status == 400


async def test_wrong_passwords_on_a_password_form_count_toward_the_lockout(tmp_path):
    async with login_env(tmp_path, policy=no_step_up(load_policy("policies/default.yaml"))) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        _, _, page = await browser.request("GET", "/reservations/1001/erase")
        body = f"csrf_token={csrf_of(page)}&password=wrong"
        for _ in range(5):
            status, _, page = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
            assert status == 200 and "Wrong password" in page
        status, headers, _ = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
        assert status == 429 and "Retry-After" in headers


async def test_identity_is_checked_after_a_reauth(tmp_path):
    """The PMS session behind the vault has become bob's: the reauth ends alice's session."""
    async with login_env(tmp_path, policy=no_step_up(load_policy("policies/default.yaml"))) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        (session,) = await env.sessions.sessions_of("alice")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            token = csrf_of(await (await client.get(env.pms_url + "/login")).text())
            answer = await client.post(env.pms_url + "/login", allow_redirects=False,
                                       data={"username": "bob", "password": "bob-demo-pw", "csrf_token": token})
            session.vault["PMSSESSID"] = answer.cookies["PMSSESSID"].value
        await env.sessions.save(session)
        _, _, page = await browser.request("GET", "/reservations/1001/erase")
        body = f"csrf_token={csrf_of(page)}&password=alice-demo-pw"
        status, _, _ = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
        assert status == 403
        assert await env.sessions.sessions_of("alice") == []


# -- change -------------------------------------------------------------------------------------


async def test_a_password_change_ends_the_users_other_sessions(tmp_path):
    async with login_env(tmp_path) as env:
        first, second = await new_browser(env), await new_browser(env)
        await enrolled(env, first, "manager")  # management: two devices at once
        await second.login("manager")
        assert len(await env.sessions.sessions_of("manager")) == 2
        _, _, page = await first.request("GET", "/account/password")
        body = f"csrf_token={csrf_of(page)}&old_password=manager-demo-pw&new_password=new-secret-1&new_password2=new-secret-1"
        status, headers, _ = await first.request("POST", "/account/password", data=body, headers=dict(FORM))
        assert (status, headers["Location"]) == (302, "/reservations?password=changed")
        assert (await first.request("GET", "/reservations"))[0] == 200
        status, headers, _ = await second.request("GET", "/reservations")
        assert status == 303 and headers["Location"].startswith("/login")
        assert len(await env.sessions.sessions_of("manager")) == 1


# -- reset --------------------------------------------------------------------------------------


async def test_a_reset_answer_never_yields_a_session_and_its_pms_session_is_logged_out(tmp_path):
    async with mail_world(tmp_path) as env:
        desk = await new_browser(env)
        await enrolled(env, desk)  # alice is signed in at the desk
        stranger = await new_browser(env)
        link = await reset_link(env, stranger, "alice")
        status, _, page = await stranger.request("GET", link)
        assert status == 200 and "Choose a new password" in page
        body = "new_password=brand-new-pw&new_password2=brand-new-pw"
        status, headers, _ = await stranger.request("POST", link, data=body, headers=dict(FORM))
        assert (status, headers["Location"]) == (302, "/reservations")  # the PMS signed alice in ...
        assert not any(c.startswith(("PMSSESSID", "gw_session")) for c in stranger.set_cookies)  # ... not here
        assert (await stranger.request("GET", "/reservations"))[0] == 303
        await env.sessions.drain()
        assert await env.pms_users_alive() == []  # the reset's PMS session was logged out
        assert await env.sessions.sessions_of("alice") == []  # and the desk's session ended
        status, headers, _ = await desk.request("GET", "/reservations")
        assert status == 303

        # The audit trail has the reset link's token only as a digest.
        token = link.rsplit("/", 1)[1]
        await asyncio.sleep(0.6)
        rows = await audit_rows(env)
        paths = [r.path for r in rows if r.path.startswith("/password/reset/")]
        assert paths and all(token not in p for p in paths), paths
        assert len(set(paths)) == 1  # the same link, the same digest


async def test_a_reset_form_with_a_live_session_goes_up_without_its_cookies(tmp_path):
    async with mail_world(tmp_path) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        link = await reset_link(env, browser, "alice")
        status, _, _ = await browser.request("POST", link, data="new_password=brand-new-pw&new_password2=brand-new-pw",
                                             headers=dict(FORM))
        assert status == 302
        assert await env.sessions.sessions_of("alice") == []
        await env.sessions.drain()
        assert await env.pms_users_alive() == []


async def test_the_reset_request_is_rate_limited_and_captchad(tmp_path):
    async with mail_world(tmp_path) as env:
        browser = await new_browser(env)
        for _ in range(10):
            status, _, _ = await browser.request("POST", "/password/forgot", data="username=nobody", headers=dict(FORM))
            assert status == 200
        status, headers, _ = await browser.request("POST", "/password/forgot", data="username=nobody", headers=dict(FORM))
        assert status == 429 and "Retry-After" in headers
    policy = load_policy("policies/default.yaml")
    policy = policy.model_copy(update={"captcha": policy.captcha.model_copy(update={"when": ["always"]})})
    async with mail_world(tmp_path / "captcha", policy=policy) as env:
        browser = await new_browser(env)
        status, headers, _ = await browser.request("POST", "/password/forgot", data="username=alice", headers=dict(FORM))
        assert status == 303 and headers["Location"].startswith("/_gateway/captcha")
        assert env.sink.messages == []


# -- everywhere else ----------------------------------------------------------------------------


async def test_a_password_anywhere_else_is_still_refused(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        _, _, page = await browser.request("GET", "/reservations/1001")
        body = f"csrf_token={csrf_of(page)}&password=alice-demo-pw"
        status, _, _ = await browser.request("POST", "/reservations/1001/confirm", data=body, headers=dict(FORM))
        assert status == 400
        # The GET of a password form's path is no password form.
        status, _, _ = await browser.request("GET", "/reservations/1001/erase?password=x")
        assert status == 400


def test_policy_check_refuses_a_password_form_over_the_login_path():
    from gateway.policy.schema import Policy

    with pytest.raises(ValueError, match="matches the login path"):
        Policy.model_validate({"login": {"password_forms": [{"kind": "reauth", "path": "^/log"}]}})
    with pytest.raises(ValueError, match="needs `new_password_fields`"):
        Policy.model_validate({"login": {"password_forms": [{"kind": "change", "path": "^/pw$"}]}})
