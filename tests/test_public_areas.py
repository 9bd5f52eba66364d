"""Public guest areas (`public_areas:`): the guest's e-mailed booking link, with no session.

Against the demo PMS, whose guest page keeps its own session in the staff cookie's name
(`PMSSESSID`, as Django's `sessionid` does) and shows staff tools to a staff session.
"""

from __future__ import annotations

import re

import pytest

from gateway.audit.path_secrets import DIGEST_PREFIX
from gateway.demo.confirmations import build_email
from gateway.demo.app import DemoSettings, _templates
from gateway.demo.app import STATE, create_app
from tests.audit_wait import audited
from tests.harness import serve_app
from tests.login_env import Browser, login_env


@pytest.fixture
async def demo_env(tmp_path):
    """The gateway with the default policy in front of a demo PMS the test can look into."""
    app = create_app(DemoSettings())
    async with serve_app(app) as pms_url, login_env(tmp_path, pms_url=pms_url) as env:
        env.pms_state = app[STATE]
        yield env


def guest_link(env, reservation_id: int = 1001) -> tuple[str, str]:
    """The path of the guest link the confirmation e-mail carries, and its secret."""
    reservation = env.pms_state.reservations[reservation_id]
    message = build_email(reservation, DemoSettings(public_url=env.url), _templates())
    path = re.search(r"https?://[^/\s]+(/guest/booking/\S+)", message.get_body(("plain",)).get_content()).group(1)
    return path, reservation.guest_secret


async def test_guest_opens_the_secret_link_without_a_session_and_keeps_its_own_cookie(demo_env):
    env = demo_env
    path, secret = guest_link(env)
    guest = Browser(env)
    try:
        status, _, page = await guest.request("GET", path)
        assert status == 200 and "Your booking 1001" in page and "First visit." in page
        assert any(c.startswith("PMSSESSID=guest-") for c in guest.set_cookies)  # not vaulted: the guest's
        status, _, page = await guest.request("GET", path)
        assert "Welcome back." in page  # sent back up untouched, vaulted name or not
        assert guest.cookie("gw_session") is None
        status, _, _ = await guest.request("GET", path.rsplit("/", 1)[0] + "/wrong-secret")
        assert status == 404
    finally:
        await guest.close()
    records = await audited(env, lambda r: (r["path"] or "").startswith("/guest/booking/1001/"))
    assert all(secret not in repr(r) for r in records)
    assert records[0]["path"].startswith("/guest/booking/1001/" + DIGEST_PREFIX)
    assert records[0]["extra"].get("area") == "guest booking" and records[0]["user"] is None


async def test_a_staff_session_is_neither_sent_nor_refreshed_on_the_guest_page(demo_env):
    env = demo_env
    path, _ = guest_link(env)
    staff = Browser(env)
    try:
        await staff.password("alice")
        await staff.enroll("alice")
        [session] = await env.sessions.sessions_of("alice")
        env.clock.advance(600)
        status, _, page = await staff.request("GET", path)
        assert status == 200 and "Staff view" not in page  # the vaulted PMSSESSID never went up
        [after] = await env.sessions.sessions_of("alice")
        assert after.last_active == session.last_active  # a guest page is no staff activity
        status, _, page = await staff.request("GET", "/reservations")
        assert status == 200 and "Logged in as <b>alice</b>" in page  # the staff session lives on
    finally:
        await staff.close()


async def test_a_password_field_is_still_refused_in_a_guest_area(demo_env):
    env = demo_env
    path, _ = guest_link(env)
    guest = Browser(env)
    try:
        status, _, _ = await guest.request(
            "POST", path, data="note=hello&password=hunter2", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 400
        status, _, page = await guest.request(
            "POST", path, data="note=hello", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 200 and "Your booking" in page
    finally:
        await guest.close()
