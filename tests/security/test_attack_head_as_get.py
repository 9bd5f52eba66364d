"""An access rule for GET also holds for HEAD: the PMS runs the same handler for both.

Found by the attack on issue 8: a rule `{deny: ..., methods: [GET]}` matched the method
name exactly, so `HEAD /reservations/1002` passed it, and the PMS (aiohttp, Flask, Rails
and most others answer HEAD with the GET handler) ran the denied page's handler: its side
effects, its headers, its status as an oracle. HEAD is judged as GET.
"""

from __future__ import annotations

import yaml

from gateway.policy import load_policy
from tests.harness import serve_app
from tests.login_env import Browser, login_env, signed_in_without_csrf
from tests.security import naive_upstream

IDENTITY = {"path": "/", "pattern": "Logged in as <b>([^<]+)</b>", "status": [200]}


async def test_head_is_denied_where_get_is(tmp_path):
    overlay = tmp_path / "rules.yaml"
    overlay.write_text(yaml.safe_dump({
        "login": {"identity": IDENTITY},
        "groups": {"reception": {"access": {"rules": [{"deny": r"^/reservations/\d+$", "methods": ["GET"]}]}}},
    }))
    app = naive_upstream.create_app()
    policy = load_policy("policies/default.yaml", overlay)
    async with serve_app(app) as pms, login_env(tmp_path, policy=policy, pms_url=pms) as env:
        browser = await signed_in_without_csrf(env)
        try:
            app[naive_upstream.SEEN].clear()
            assert (await browser.request("GET", "/reservations/1002"))[0] == 403
            assert (await browser.request("HEAD", "/reservations/1002"))[0] == 403
            assert not any(path == "/reservations/1002" for _, path, _ in app[naive_upstream.SEEN])
        finally:
            await browser.close()


async def test_a_rate_limit_for_get_counts_head(tmp_path):
    overlay = tmp_path / "limits.yaml"
    overlay.write_text(yaml.safe_dump({"rate_limits": [
        {"path": "^/login$", "methods": ["GET"], "key": "address", "rate": "1/minute"}]}))
    async with login_env(tmp_path, policy=load_policy("policies/default.yaml", overlay)) as env:
        browser = Browser(env)
        try:
            assert (await browser.request("GET", "/login"))[0] == 200
            assert (await browser.request("HEAD", "/login"))[0] == 429
        finally:
            await browser.close()
