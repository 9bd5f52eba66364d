"""A captcha staff don't notice and attackers do (issue 12 item 2).

Behind the hotel's one NAT address, one colleague's failed logins must not captcha the
others; from an outside address, password spraying (many usernames, one address) is
caught. A login the captcha interrupts is held encrypted under a key only the browser's
cookie has and replayed once the captcha is solved, through every check again.
"""

from __future__ import annotations

import pytest

from gateway.risk.captcha import CaptchaGate
from gateway.risk.held_login import HeldLogins
from gateway.risk.networks import client_key
from tests.login_env import login_env
from tests.test_captcha import OVERRIDES, VPN, RemoteBrowser, captcha_location, policy_with

INSIDE = "192.168.10.20"  # hotel_lan: every colleague's address, as the PMS sees them through NAT
OUTSIDE = "8.8.8.8"


class StaffBrowser(RemoteBrowser):
    """Remembers its last captcha form, to post it again where a 307 sends it."""

    last_form: dict[str, str] = {}

    async def post_captcha(self, **fields: str):
        self.last_form = fields
        return await super().post_captcha(**fields)

    async def post_captcha_to(self, path: str):
        return await self.request("POST", path, data=self.last_form)


@pytest.fixture
async def browsers():
    opened = []

    def make(env, ip):
        opened.append(StaffBrowser(env, ip))
        return opened[-1]

    yield make
    for browser in opened:
        await browser.close()


async def test_one_colleague_failing_inside_does_not_captcha_the_others(tmp_path, browsers):
    policy = policy_with(when=["after_failures"], known_networks=["hotel_lan"])
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        typo = browsers(env, INSIDE)
        for _ in range(3):
            status, _, _ = await typo.password("manager", "wrong")
            assert status == 200  # forwarded, refused by the PMS
        status, headers, _ = await typo.password("manager")
        assert captcha_location(headers) == "/login"  # the one who failed is asked
        # ten colleagues behind the same address are not
        for name in ("alice", "bob", *(f"colleague{n}" for n in range(8))):
            browser = browsers(env, INSIDE)
            status, headers, _ = await browser.password(name, "alice-demo-pw" if name == "alice" else "bob-demo-pw")
            assert not headers.get("Location", "").startswith("/_gateway/captcha"), name
        assert sorted(await env.pms_users_alive()) == ["alice", "bob"]


async def test_twenty_usernames_sprayed_from_one_outside_address_are_captchad(tmp_path, browsers):
    policy = policy_with(when=["after_failures"], known_networks=["hotel_lan"])
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        sprayer = browsers(env, OUTSIDE)
        asked = 0
        for n in range(20):
            status, headers, _ = await sprayer.password(f"user{n}", "Summer2024!")
            asked += headers.get("Location", "").startswith("/_gateway/captcha")
        assert asked == 17  # the first three tried, every later one captcha'd
        status, headers, _ = await sprayer.password("alice")
        assert captcha_location(headers) == "/login"


async def test_held_login_is_replayed_after_the_captcha_without_retyping(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        status, headers, _ = await browser.password("alice")
        assert captcha_location(headers) == "/login" and await env.pms_sessions() == []
        held = browser.cookie("gw_held")
        assert held and any("gw_held=" in c and "HttpOnly" in c and "SameSite=Strict" in c and "Max-Age=120" in c
                            for c in browser.set_cookies)
        # the store has ciphertext only: no password, no key
        held_id, _, key = held.partition(".")
        sealed = await env.services.store.get(f"captcha:held:{held_id}")
        assert sealed and b"alice-demo-pw" not in sealed and key.encode() not in sealed
        assert 0 < await env.services.store.ttl(f"captcha:held:{held_id}") <= 120

        status, headers, _ = await browser.post_captcha(altcha=await browser.solve(), next="/login")
        assert status == 307 and headers["Location"] == "/login"
        # the browser repeats its POST at the login URL (what a 307 means); the gate replays the login
        status, headers, _ = await browser.post_captcha_to("/login")
        assert status == 303 and headers["Location"] == "/_gateway/2fa"
        assert await env.pms_users_alive() == ["alice"]
        assert await env.services.store.get(f"captcha:held:{held_id}") is None  # one use

        # replaying it again finds nothing: the browser is sent to sign in, nothing forwarded
        await browser.pass_captcha()
        status, headers, _ = await browser.post_captcha_to("/login")
        assert status == 303 and headers["Location"] == "/login"
        assert await env.pms_users_alive() == ["alice"]


async def test_replay_runs_every_check_again(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        await browser.password("alice")
        await browser.post_captcha(altcha=await browser.solve(), next="/login")
        await env.services.store.set("lock:user:alice", b"1", ttl=60)  # locked meanwhile
        status, _, _ = await browser.post_captcha_to("/login")
        assert status == 429 and await env.pms_sessions() == []

        # without the pass the captcha gave, a replay is challenged again, not forwarded
        other = browsers(env, VPN)
        await other.password("bob")
        await other.post_captcha(altcha=await other.solve(), next="/login")
        other.client.cookie_jar.clear(lambda cookie: cookie.key == "gw_captcha")
        status, headers, _ = await other.post_captcha_to("/login")
        assert captcha_location(headers) == "/login" and await env.pms_sessions() == []


async def test_held_login_opens_only_with_the_cookie_key_and_from_the_same_network(tmp_path):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        held = HeldLogins(env.services.store)
        policy = env.policy()
        cookie = await held.hold(b"username=alice&password=secret", "", client_key(VPN, policy))
        held_id = cookie.partition(".")[0]
        assert await held.peek(f"{held_id}.{'A' * 43}", client_key(VPN, policy)) is None  # another key
        assert await held.peek(cookie, client_key("81.2.69.160", policy)) is None  # another address
        opened = await held.take(cookie, client_key(VPN, policy))
        assert opened is not None and opened.body == b"username=alice&password=secret"
        assert await held.take(cookie, client_key(VPN, policy)) is None


async def test_a_typed_login_with_a_stale_held_cookie_goes_through_as_typed(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        await browser.password("alice", "wrong")  # held: wrong password
        await browser.pass_captcha()  # 307 not followed: the user types again
        status, headers, _ = await browser.password("bob")
        assert headers["Location"] == "/_gateway/2fa"
        assert await env.pms_users_alive() == ["bob"]
        gate = next(a for a in env.addons if isinstance(a, CaptchaGate))
        assert gate.held is not None


async def test_json_logins_are_not_held(tmp_path, browsers):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        browser = browsers(env, VPN)
        status, _, _ = await browser.request(
            "POST", "/login", data="username=alice&password=alice-demo-pw",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        assert status == 403 and browser.cookie("gw_held") is None
