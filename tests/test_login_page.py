"""`login.page`: a single-page-app PMS whose login (`login.path`) is a JSON endpoint gets its
signed-out browsers sent to its sign-in page, not to the endpoint.

The PMS is tests/discover_pms.py: the sign-in page `/signin` posts JSON to `/api/session`.
"""

from __future__ import annotations

import json
import re

import pytest

from gateway.policy import load_policy
from gateway.policy.errors import ConfigError
from gateway.policy.schema import LoginRule
from tests.discover_pms import USERS, discover_pms
from tests.harness import serve_app
from tests.login_env import Browser, login_env

SPA_POLICY = """\
login:
  path: /api/session
  page: /signin
  format: json
  username_field: login
  password_field: passphrase
  success: {status: [200], redirect_not_to: null, cookie_set: desk_session}
  upstream_session_cookies: [desk_session]
  logout_paths: [/signout]
  public_paths: [^/assets/]
"""


async def _json_login(browser: Browser) -> dict:
    status, _, page = await browser.request("GET", "/signin")
    assert status == 200, page  # the sign-in page needs no session
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
    status, _, body = await browser.request(
        "POST", "/api/session", data=json.dumps({"login": "ana", "passphrase": USERS["ana"]}),
        headers={"Content-Type": "application/json", "X-CSRF-Token": token},
    )
    assert status == 200, body
    return json.loads(body)


async def _enroll_json(browser: Browser, user: str) -> None:
    """Browser.enroll, for a JSON login: its last step answers JSON, not a redirect."""
    invite = await browser.env.services.users.create_invite(user)
    status, _, page = await browser.submit(action="invite", invite_code=invite)
    browser.env.secrets[user] = re.search(r'<p class="secret" id="secret">([A-Z2-7]+)</p>', page).group(1)
    status, _, page = await browser.submit(action="enroll", code=browser.env.code(user))
    assert status == 200, page
    status, _, body = await browser.submit(action="continue")
    assert status == 200 and json.loads(body)["status"] == "ok", body


async def test_signed_out_browsers_go_to_the_sign_in_page_not_the_json_endpoint(tmp_path):
    policy_file = tmp_path / "spa.yaml"
    policy_file.write_text(SPA_POLICY)
    async with serve_app(discover_pms()) as pms, login_env(tmp_path, policy=load_policy(policy_file), pms_url=pms) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.request("GET", "/desk")
            assert (status, headers["Location"]) == (303, "/signin?next=%2Fdesk")
            status, _, body = await browser.request("GET", "/desk", headers={"Accept": "application/json"})
            assert status == 401 and json.loads(body)["login"] == "/signin"
            status, headers, _ = await browser.request("GET", "/_gateway/2fa")  # no pending login
            assert (status, headers["Location"]) == (303, "/signin")

            assert (await _json_login(browser))["status"] == "second_factor_required"
            await _enroll_json(browser, "ana")
            status, _, page = await browser.request("GET", "/desk")
            assert status == 200 and '<span class="who">ana</span>' in page

            env.clock.advance(env.policy.current.sessions.idle_timeout + 60)
            status, headers, _ = await browser.request("GET", "/desk")
            assert (status, headers["Location"]) == (303, "/signin?next=%2Fdesk")
            status, _, page = await browser.request("GET", "/signin", headers={"Sec-Fetch-Dest": "document"})
            assert status == 200 and 'id="gateway-notice"' in page  # "signed out after inactivity", on the page
        finally:
            await browser.close()


def test_page_keeps_the_fragment_after_the_next_parameter_and_defaults_to_the_path():
    spa = LoginRule(path="/api/auth/login", page="/app/#/login")
    assert spa.page_url("next=%2Fapp%2Fguests") == "/app/?next=%2Fapp%2Fguests#/login"
    assert spa.page_path == "/app/"
    assert LoginRule(path="/login").page_url("next=%2Fx") == "/login?next=%2Fx"


@pytest.mark.parametrize("page", ["//evil.example/signin", "https://evil.example/", "signin", "/signin?x=1",
                                  "/_gateway/2fa", "/\\evil.example"])
def test_a_page_off_the_pms_is_refused_at_its_line(tmp_path, page):
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(f"login:\n  path: /api/session\n  page: {json.dumps(page)}\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(policy_file)
    assert f"{policy_file}:3: login.page:" in str(caught.value)
