"""Issue 8, item 16: Back after logout does not bring guest data back.

Pages of a signed-in session are sent `Cache-Control: no-store` (paths listed in
`sessions.cacheable_paths` excepted), and every answer that ends a session (the PMS's
logout, the gateway's, idle expiry noticed on a request) sends `Clear-Site-Data: "cache"`
and expires the session cookie; never `"cookies"`, which would wipe the device and
remember-me cookies too. Checked at the HTTP level and in a real Chromium.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy import load_policy
from gateway.policy.schema import Policy
from tests.browser import CHROMIUM, page, shot, sign_in_enrolling  # noqa: F401 (page is a fixture)
from tests.login_env import Browser, LoginEnv, login_env


def policy_with_cacheable(tmp_path: Path, paths: list[str]) -> Policy:
    """The default policy with `sessions.cacheable_paths` set to `paths`."""
    lines = Path("policies/default.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
    lines = [line for line in lines if not line.startswith("  cacheable_paths:")]
    at = lines.index("sessions:                            # defaults for every group\n") + 1
    lines.insert(at, f"  cacheable_paths: [{', '.join(paths)}]\n")
    target = tmp_path / "cacheable.yaml"
    target.write_text("".join(lines), encoding="utf-8")
    return load_policy(target)


async def signed_in(env: LoginEnv) -> Browser:
    browser = Browser(env)
    await browser.password("alice")
    await browser.enroll("alice")
    return browser


def session_cookie_expired(headers_seen: list[str]) -> bool:
    return any(re.match(r"gw_session=;.*Max-Age=0", c) for c in headers_seen)


async def test_session_pages_are_no_store_and_listed_paths_may_be_cached(tmp_path):
    async with login_env(tmp_path, policy=policy_with_cacheable(tmp_path, ["^/static/"])) as env:
        browser = await signed_in(env)
        try:
            status, headers, page_text = await browser.request("GET", "/reservations/1003")
            assert status == 200 and "Passport" in page_text
            assert headers["Cache-Control"] == "no-store" and "Expires" not in headers
            status, headers, _ = await browser.request("GET", "/static/pms.css")
            assert status == 200 and headers.get("Cache-Control") != "no-store"
        finally:
            await browser.close()


async def test_without_cacheable_paths_every_session_page_is_no_store(tmp_path):
    async with login_env(tmp_path, policy=policy_with_cacheable(tmp_path, [])) as env:
        browser = await signed_in(env)
        try:
            for path in ("/reservations", "/static/pms.css"):
                status, headers, _ = await browser.request("GET", path)
                assert status == 200 and headers["Cache-Control"] == "no-store", path
        finally:
            await browser.close()


async def test_pms_logout_clears_the_cache_not_the_cookies(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            status, headers, _ = await browser.request("GET", "/logout")
            assert status in (302, 303)
            assert headers["Clear-Site-Data"] == '"cache"' and headers["Cache-Control"] == "no-store"
            assert session_cookie_expired(browser.set_cookies[-4:])
            assert browser.cookie("gw_device")  # the device cookie outlives the session
        finally:
            await browser.close()


async def test_gateway_logout_clears_the_cache(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            _, _, page_text = await browser.request("GET", "/_gateway/logout")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page_text).group(1)
            status, headers, _ = await browser.request("POST", "/_gateway/logout", data={"csrf": csrf})
            assert status == 303 and headers["Clear-Site-Data"] == '"cache"'
            assert session_cookie_expired(browser.set_cookies[-3:])
        finally:
            await browser.close()


async def test_idle_expiry_noticed_on_a_request_clears_the_cache(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            env.clock.advance(env.policy().sessions.idle_timeout + 1)
            status, headers, _ = await browser.request("GET", "/reservations/1003")
            assert status == 303 and headers["Clear-Site-Data"] == '"cache"'
            assert session_cookie_expired(browser.set_cookies[-3:])
        finally:
            await browser.close()


async def test_revocation_noticed_on_a_request_clears_the_cache(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await signed_in(env)
        try:
            assert await env.sessions.end_user("alice", "revoked") == 1
            status, headers, _ = await browser.request("GET", "/reservations/1003")
            assert status == 303 and headers["Clear-Site-Data"] == '"cache"'
            assert session_cookie_expired(browser.set_cookies[-3:])
        finally:
            await browser.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
async def test_back_after_logout_shows_no_guest_data_in_chromium(page, tmp_path):
    async with login_env(tmp_path) as env:
        await sign_in_enrolling(page, env, "alice")
        await page.goto(env.url + "/reservations/1003")
        card = (await page.inner_text("td.card")).strip()
        assert card
        await page.click("a[href='/logout']")
        await page.wait_for_url("**/login**")
        await page.go_back()
        await page.wait_for_load_state()
        await shot(page, "back-after-logout")
        assert card not in await page.content()
        assert "/login" in page.url
