"""The RDAP owner of a login address in the login history and the new-address alert
(issue 12 item 1): recorded when the background lookup had finished by the attempt,
never waited for. Uses the fake RDAP server of test_network_owners.py."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.audit.logins import recent_logins
from gateway.policy.schema import Policy
from gateway.risk.captcha import CaptchaGate
from gateway.risk.rdap import owner_names
from tests.harness import serve_app
from tests.login_env import login_env
from tests.security.test_network_owners import (  # noqa: F401 (fake_rdap and browsers are fixtures)
    GEOIP_ONLY,
    GOOGLE_BY_RDAP,
    RDAP_ANSWERS,
    TRIARA_BY_RDAP,
    browsers,
    fake_rdap,
    policy_with,
)


def _owner(ip: str) -> str:
    return ", ".join(owner_names(RDAP_ANSWERS[ip], ip))


async def test_the_owner_found_before_the_login_ends_is_in_the_history_and_the_new_ip_alert(
    tmp_path, fake_rdap, browsers  # noqa: F811
):
    server, url = fake_rdap
    alerts: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        alerts.append(await request.json())
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    data = policy_with(url).model_dump(mode="json")
    data["alerts"] = {**data["alerts"], "new_ip_on_first_login": True}
    async with serve_app(hook_app) as hook_url, login_env(
        tmp_path, policy=Policy.model_validate(data),
        config_overrides={**GEOIP_ONLY, "alerts_webhook__url": hook_url + "/hook"},
    ) as env:
        gate = next(a for a in env.addons if isinstance(a, CaptchaGate))
        alice = browsers(env, GOOGLE_BY_RDAP)
        status, headers, _ = await alice.password("alice")
        assert headers["Location"] == "/_gateway/2fa"  # the lookup runs behind the login ...
        await gate.rdap.drain()  # ... and has finished by the second factor
        await alice.enroll("alice")
        audit = env.services.audit
        await audit.alerter.drain()

        [row] = [r for r in await recent_logins(env.services.database, "alice") if r["outcome"] == "success"]
        assert row["ip"] == GOOGLE_BY_RDAP and row["owner"] == _owner(GOOGLE_BY_RDAP)
        assert "Google Inc." in row["owner"]
        [alert] = [a for a in alerts if a["event"] == "new_ip_login"]
        assert alert["ip"] == GOOGLE_BY_RDAP and alert["owner"] == _owner(GOOGLE_BY_RDAP)


async def test_an_owner_not_yet_known_is_not_waited_for_and_recorded_once_known(
    tmp_path, fake_rdap, browsers  # noqa: F811
):
    server, url = fake_rdap
    server.hold = asyncio.Event()  # the registry sits on its answer
    async with login_env(tmp_path, policy=policy_with(url), config_overrides=GEOIP_ONLY) as env:
        gate = next(a for a in env.addons if isinstance(a, CaptchaGate))
        await browsers(env, TRIARA_BY_RDAP).password("bob", "wrong-password")
        server.hold.set()
        await gate.rdap.drain()
        assert server.events[-1] == ("answered", TRIARA_BY_RDAP)
        await browsers(env, TRIARA_BY_RDAP).password("bob", "wrong-again")

        rows = await recent_logins(env.services.database, "bob")
        assert [(r["outcome"], r["owner"]) for r in rows] == [
            ("failure", _owner(TRIARA_BY_RDAP)),  # newest first: asked after the lookup finished
            ("failure", None),  # the login did not wait for the registry
        ]
        assert "Triara" in rows[0]["owner"]


async def test_rdap_off_records_no_owner_even_from_an_earlier_cache(tmp_path, fake_rdap, browsers):  # noqa: F811
    server, url = fake_rdap
    async with login_env(tmp_path, policy=policy_with(url), config_overrides=GEOIP_ONLY) as env:
        gate = next(a for a in env.addons if isinstance(a, CaptchaGate))
        await browsers(env, TRIARA_BY_RDAP).password("bob", "wrong-password")
        await gate.rdap.drain()
        await browsers(env, TRIARA_BY_RDAP).password("bob", "wrong-again")
        env.policy.current = policy_with(url, rdap=False)  # the operator turns RDAP off
        await browsers(env, TRIARA_BY_RDAP).password("bob", "wrong-once-more")
        newest, before, _ = await recent_logins(env.services.database, "bob")
        assert (newest["owner"], before["owner"]) == (None, _owner(TRIARA_BY_RDAP))
