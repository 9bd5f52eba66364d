"""Captcha before a risky login: VPN/Tor/hosting/proxy/unknown networks and repeated failures.

A real gateway in front of the demo PMS; client addresses come through a trusted proxy's
X-Forwarded-For and are looked up in MaxMind's test Anonymous-IP database.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import altcha
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from yarl import URL

from gateway.policy import load_policy
from gateway.policy.schema import Policy
from gateway.proxy.canonical import canonicalize
from gateway.proxy.exchange import Exchange
from gateway.risk.captcha import CaptchaGate, Challenges
from gateway.store.memory import MemoryStore
from tests.login_env import Browser, ForwardedBrowser, login_env, store_url_for

GEOIP = Path(__file__).parent / "data" / "geoip"
VPN, TOR, HOSTING, PROXY = "1.2.0.1", "65.0.0.1", "71.160.223.1", "186.30.236.1"
ORDINARY = "89.160.20.112"  # Linköping, not anonymous
OVERRIDES = {
    "trusted_proxies": "[127.0.0.0/8]",
    "geoip__anonymous_ip": str(GEOIP / "GeoIP2-Anonymous-IP-Test.mmdb"),
}


def policy_with(**captcha) -> Policy:
    data = load_policy("policies/default.yaml").model_dump(mode="json")
    data["captcha"] = {**data["captcha"], "difficulty": 2000, **captcha}
    return Policy.model_validate(data)


class RemoteBrowser(ForwardedBrowser):
    """A browser whose requests reach the gateway through a trusted proxy, from `ip`."""

    async def pow_page(self, next_path: str = "/login") -> tuple[dict, str]:
        status, _, page = await self.request("GET", f"/_gateway/captcha?next={next_path}")
        assert status == 200, page
        challenge = re.search(r'data-challenge="([^"]+)"', page).group(1)
        return json.loads(html.unescape(challenge)), page

    async def solve(self, next_path: str = "/login") -> str:
        """Brute-force the proof of work as the page's script does; returns the payload."""
        challenge, _ = await self.pow_page(next_path)
        parsed = altcha.Challenge.from_dict(challenge)
        solution = altcha.solve_challenge(parsed, timeout=10)
        assert solution is not None
        return altcha.Payload(parsed, solution).to_base64()

    async def post_captcha(self, **fields: str):
        return await self.request("POST", "/_gateway/captcha", data=fields)

    async def pass_captcha(self) -> None:
        status, headers, page = await self.post_captcha(altcha=await self.solve(), next="/login")
        # 307 when a login was held (replayed if followed: tests/security/test_captcha_staff.py)
        assert status in (303, 307) and headers["Location"] == "/login", (status, page)


@pytest.fixture(params=["memory", "redis"])
async def env(request, tmp_path):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with login_env(
        tmp_path, store_url_for(request.param, redis_url), policy=policy_with(), config_overrides=OVERRIDES
    ) as environment:
        yield environment


@pytest.fixture
async def memory_env(tmp_path):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as environment:
        yield environment


@pytest.fixture
async def browsers():
    opened: list[Browser] = []

    def make(env, ip: str) -> RemoteBrowser:
        browser = RemoteBrowser(env, ip)
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        await browser.close()


def captcha_location(headers) -> str:
    location = headers["Location"]
    assert location.startswith("/_gateway/captcha?next="), location
    return parse_qs(urlsplit(location).query)["next"][0]


async def test_vpn_login_goes_to_captcha_and_the_pms_never_sees_the_password(env, browsers):
    browser = browsers(env, VPN)
    status, headers, _ = await browser.password("alice")
    assert status == 303 and captcha_location(headers) == "/login"
    assert headers["Cache-Control"] == "no-store"
    assert await env.pms_sessions() == []
    assert browser.cookie("gw_pending") is None

    await browser.pass_captcha()
    cookie = next(c for c in browser.set_cookies if c.startswith("gw_captcha="))
    assert "HttpOnly" in cookie and "Max-Age=600" in cookie and "SameSite=Strict" in cookie
    status, headers, _ = await browser.password("alice")
    assert status == 303 and headers["Location"] == "/_gateway/2fa"
    assert await env.pms_users_alive() == ["alice"]


async def test_the_browser_returns_to_the_page_its_login_form_was_on(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    status, headers, _ = await browser.request(
        "POST", "/login", data="username=alice&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Referer": memory_env.url + "/login?next=%2Freservations"},
    )
    assert status == 303 and captcha_location(headers) == "/login?next=%2Freservations"
    status, _, page = await browser.request("GET", headers["Location"])
    assert status == 200 and 'name="next" value="/login?next=%2Freservations"' in page
    status, headers, _ = await browser.request(
        "POST", "/login", data="username=alice&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": "https://evil.example/login"},
    )
    assert captcha_location(headers) == "/login"  # a foreign Referer is ignored


async def test_a_pass_is_good_for_one_attempt_then_a_new_captcha(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    await browser.pass_captcha()
    status, _, page = await browser.password("alice", "wrong")
    assert status == 200 and "Invalid username or password" in page  # forwarded, refused by the PMS
    status, headers, _ = await browser.password("alice")
    assert status == 303 and captcha_location(headers) == "/login"


async def test_pass_uses_and_lifetime_follow_the_policy(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(pass_uses=2, pass_valid_for="2m"), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        await browser.pass_captcha()
        assert any("Max-Age=120" in c for c in browser.set_cookies if c.startswith("gw_captcha="))
        status, _, _ = await browser.password("alice", "wrong")
        assert status == 200
        status, headers, _ = await browser.password("alice")
        assert headers["Location"] == "/_gateway/2fa"
        status, headers, _ = await browser.password("alice")
        assert captcha_location(headers) == "/login"  # two uses spent

        await browser.pass_captcha()
        env.clock.advance(121)
        status, headers, _ = await browser.password("alice")
        assert captcha_location(headers) == "/login"  # expired


async def test_pass_is_bound_to_the_client_address(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    await browser.pass_captcha()
    browser.ip = "81.2.69.160"  # another anonymous address, same cookie jar
    status, headers, _ = await browser.password("alice")
    assert captcha_location(headers) == "/login"
    assert await memory_env.pms_sessions() == []


async def test_forged_pass_is_refused(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    await browser.pass_captcha()
    token = browser.cookie("gw_captcha")
    expires, nonce, mac = token.split(".")
    jar = browser.client.cookie_jar
    jar.clear(lambda cookie: cookie.key == "gw_captcha")
    jar.update_cookies({"gw_captcha": f"{int(expires) + 3600}.{nonce}.{mac}"}, URL(memory_env.url))
    status, headers, _ = await browser.password("alice")
    assert captcha_location(headers) == "/login"


async def test_replayed_or_tampered_solution_is_refused(env, browsers):
    browser = browsers(env, VPN)
    payload = await browser.solve()
    status, headers, _ = await browser.post_captcha(altcha=payload, next="/login")
    assert status == 303
    other = browsers(env, VPN)
    status, headers, page = await other.post_captcha(altcha=payload, next="/login")
    assert status == 400 and "The check did not succeed" in page
    assert other.cookie("gw_captcha") is None

    data = json.loads(base64.b64decode(await other.solve()))
    data["solution"]["counter"] += 1
    status, _, _ = await other.post_captcha(altcha=base64.b64encode(json.dumps(data).encode()).decode())
    assert status == 400
    data = json.loads(base64.b64decode(await other.solve()))
    data["challenge"]["parameters"]["expiresAt"] += 3600  # the signature covers it
    status, _, _ = await other.post_captcha(altcha=base64.b64encode(json.dumps(data).encode()).decode())
    assert status == 400
    status, _, _ = await other.post_captcha(altcha="not base64 at all")
    assert status == 400
    assert other.cookie("gw_captcha") is None


async def test_expired_challenge_is_refused():
    store = MemoryStore()
    late = Challenges(b"k" * 32, store, clock=lambda: time.time() - 301)
    challenge = altcha.Challenge.from_dict(await late.proof_of_work(50, 300))
    payload = altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64()
    assert not await late.check_proof_of_work(payload)
    assert await store.get(f"captcha:pow:{challenge.parameters.nonce}") is not None  # only the expiry refused it
    fresh = Challenges(b"k" * 32, store)
    challenge = altcha.Challenge.from_dict(await fresh.proof_of_work(50, 300))
    payload = altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64()
    assert await fresh.check_proof_of_work(payload)
    assert not await fresh.check_proof_of_work(payload)
    await store.close()


async def test_image_captcha_for_browsers_without_javascript(env, browsers):
    browser = browsers(env, VPN)
    status, _, page = await browser.request("GET", "/_gateway/captcha?next=/login")
    assert "<noscript>" in page and "mode=image" in page and 'src="/_gateway/static/captcha.js"' in page
    assert "<script>" not in page  # no inline script (strict CSP)
    status, _, page = await browser.request("GET", "/_gateway/captcha?mode=image&next=/login")
    assert status == 200 and 'src="data:image/png;base64,' in page and "<script" not in page
    image_id = re.search(r'name="image_id" value="([^"]+)"', page).group(1)
    answer = (await env.services.store.get(f"captcha:img:{image_id}")).decode()
    status, headers, _ = await browser.post_captcha(image_id=image_id, answer=f" {answer.lower()} ", next="/login")
    assert status == 303 and headers["Location"] == "/login" and browser.cookie("gw_captcha")
    status, headers, _ = await browser.password("alice")
    assert headers["Location"] == "/_gateway/2fa"

    other = browsers(env, VPN)
    status, _, page = await other.post_captcha(image_id=image_id, answer=answer, next="/login")
    assert status == 400 and other.cookie("gw_captcha") is None  # one-time
    assert 'src="data:image/png;base64,' in page  # a new picture to try

    status, _, page = await other.request("GET", "/_gateway/captcha?mode=image&next=/login")
    image_id = re.search(r'name="image_id" value="([^"]+)"', page).group(1)
    answer = (await env.services.store.get(f"captcha:img:{image_id}")).decode()
    status, _, _ = await other.post_captcha(image_id=image_id, answer="WRONG", next="/login")
    assert status == 400
    status, _, _ = await other.post_captcha(image_id=image_id, answer=answer, next="/login")
    assert status == 400  # a wrong answer used the picture up


async def test_next_must_be_a_local_path(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        status, headers, _ = await browser.post_captcha(altcha=await browser.solve(), next=target)
        assert status == 303 and headers["Location"] == "/login", target
        status, _, page = await browser.request("GET", "/_gateway/captcha?next=" + target.replace("/", "%2F"))
        assert 'name="next" value="/login"' in page
    status, headers, _ = await browser.post_captcha(altcha=await browser.solve(), next="/reservations?x=1")
    assert headers["Location"] == "/reservations?x=1"


async def test_cross_origin_captcha_post_is_refused(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    payload = await browser.solve()
    status, _, _ = await browser.request(
        "POST", "/_gateway/captcha", data={"altcha": payload}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403 and browser.cookie("gw_captcha") is None


async def test_json_clients_get_403_naming_the_captcha_and_can_solve_it(memory_env, browsers):
    browser = browsers(memory_env, VPN)
    status, headers, body = await browser.request(
        "POST", "/login", data="username=alice&password=alice-demo-pw",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    answer = json.loads(body)
    assert status == 403 and answer["error"] == "captcha_required" and answer["reason"] == "vpn"
    assert answer["captcha"].startswith("/_gateway/captcha?next=")
    status, _, body = await browser.request("GET", answer["captcha"], headers={"Accept": "application/json"})
    challenge = altcha.Challenge.from_dict(json.loads(body)["altcha"])
    payload = altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64()
    status, _, body = await browser.request("POST", "/_gateway/captcha", json={"altcha": payload})
    assert status == 200 and json.loads(body)["status"] == "ok" and browser.cookie("gw_captcha")
    assert await memory_env.pms_sessions() == []


async def test_ordinary_address_is_not_challenged(memory_env, browsers):
    browser = browsers(memory_env, ORDINARY)
    status, headers, _ = await browser.password("alice")
    assert status == 303 and headers["Location"] == "/_gateway/2fa"


async def test_fourth_attempt_after_three_failures_is_challenged(env, browsers):
    # per user: three failures from three addresses, the fourth try from a fresh one
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        status, _, _ = await browsers(env, ip).password("alice", "wrong")
        assert status == 200
    fresh = browsers(env, "10.0.0.4")
    status, headers, _ = await fresh.password("alice")
    assert captcha_location(headers) == "/login"
    status, headers, _ = await fresh.password("bob")  # another user from there is fine
    assert headers["Location"] == "/_gateway/2fa"
    await fresh.pass_captcha()
    status, headers, _ = await fresh.password("alice")
    assert headers["Location"] == "/_gateway/2fa"

    # per address: three users failing from one address, then anyone from it
    shared = browsers(env, "10.0.0.9")
    for user in ("manager", "carol", "dave"):
        status, _, _ = await shared.password(user, "wrong")
        assert status == 200
    status, headers, _ = await shared.password("manager")
    assert captcha_location(headers) == "/login"


async def test_locked_out_user_gets_429_not_a_captcha(memory_env, browsers):
    await memory_env.services.store.set("lock:user:alice", b"1", ttl=60)
    status, _, _ = await browsers(memory_env, VPN).password("alice")
    assert status == 429


async def test_policy_without_captcha_never_asks(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(when=[]), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        for _ in range(4):
            status, _, _ = await browser.password("alice", "wrong")
            assert status == 200
        status, headers, _ = await browser.password("alice")
        assert headers["Location"] == "/_gateway/2fa"


async def test_always_and_unknown_network(tmp_path, browsers):
    policy = policy_with(when=["unknown_network"], known_networks=["hotel_lan", "89.160.0.0/16"])
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        status, headers, _ = await browsers(env, "192.168.10.7").password("alice")  # hotel_lan
        assert headers["Location"] == "/_gateway/2fa"
        status, headers, _ = await browsers(env, ORDINARY).password("bob")
        assert headers["Location"] == "/_gateway/2fa"
        status, headers, _ = await browsers(env, "8.8.8.8").password("manager")
        assert captcha_location(headers) == "/login"


@pytest.mark.parametrize(
    "when, ip, reason",
    [
        (["anonymous_vpn"], VPN, "vpn"),
        (["tor"], TOR, "tor"),
        (["hosting_provider"], HOSTING, "hosting provider"),
        (["public_proxy"], PROXY, "public proxy"),
        (["tor"], VPN, None),
        (["anonymous_vpn", "tor", "hosting_provider", "public_proxy"], ORDINARY, None),
        (["always"], ORDINARY, "always"),
        (["unknown_network"], "8.8.8.8", "unknown network"),  # default policy names only hotel_lan
        (["unknown_network"], "127.0.0.1", None),
    ],
)
async def test_reasons(memory_env, when, ip, reason):
    gate = next(a for a in memory_env.addons if isinstance(a, CaptchaGate))
    assert await gate.reason(ip, "alice", policy_with(when=when)) == reason


async def test_decision_is_recorded_on_the_exchange(memory_env):
    gate = next(a for a in memory_env.addons if isinstance(a, CaptchaGate))
    request = make_mocked_request(
        "POST", "/login", headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "30"}
    )
    ex = Exchange(request, "r1", VPN, "http", "127.0.0.1", canonicalize("/login"), "", CIMultiDict())
    ex.body = b"username=Alice&password=secret"
    response = await gate.request(ex)
    assert response.status == 303
    assert (ex.decision, ex.reason, ex.user) == ("challenged", "captcha required: vpn", "alice")
