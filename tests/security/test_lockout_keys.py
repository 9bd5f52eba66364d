"""Issue 8, item 6: per-address lockouts and captcha triggers keyed per /128.

The attack: every IPv6 client owns a /64, so counting failures per address let one client
try forever from fresh addresses, and `::ffff:10.0.0.1` was another address than
`10.0.0.1`. And the lockout itself was a lever: anyone could lock `manager`, for the
hotel's own network too. Here: a real gateway in front of the demo PMS, client addresses
through a trusted proxy's X-Forwarded-For.
"""

from __future__ import annotations

import pytest

from gateway.policy import load_policy
from gateway.policy.schema import LockoutRule, Policy
from gateway.risk.networks import network_key
from tests.login_env import Browser, ForwardedBrowser, login_env

OVERRIDES = {"trusted_proxies": "[127.0.0.0/8]"}


def policy_with(lockout: dict | None = None, captcha: dict | None = None) -> Policy:
    """policies/default.yaml with lockout and captcha options changed (captcha off unless given)."""
    policy = load_policy("policies/default.yaml")
    return policy.model_copy(update={
        "lockout": policy.lockout.model_copy(update=lockout or {}),
        "captcha": policy.captcha.model_copy(update={"when": [], **(captcha or {})}),
    })


@pytest.fixture
async def at(request):
    """at(env, ip) -> a browser there; all closed after the test."""
    opened: list[Browser] = []

    def make(env, ip: str | None) -> ForwardedBrowser:
        opened.append(ForwardedBrowser(env, ip))
        return opened[-1]

    yield make
    for browser in opened:
        await browser.close()


def test_one_key_per_network():
    assert network_key("2001:db8::1", 64) == network_key("2001:db8::2", 64) == "2001:db8::/64"
    assert network_key("2001:db8:0:1::1", 64) != network_key("2001:db8::1", 64)
    assert network_key("::ffff:10.0.0.1", 64) == network_key("10.0.0.1", 64) == "10.0.0.1"
    assert network_key("2001:db8::1%eth0", 56) == "2001:db8::/56"


async def test_failures_from_one_ipv6_64_lock_it_whole(tmp_path, at):
    policy = policy_with(lockout={"per_ip": LockoutRule(failures=2, within=900, lock_for=3600)})
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        # Two users (no user lock), two addresses of one /64.
        assert (await at(env, "2001:db8::1").password("alice", "wrong"))[0] == 200
        assert (await at(env, "2001:db8::2").password("bob", "wrong"))[0] == 200
        status, headers, _ = await at(env, "2001:db8::beef").password("manager")
        assert status == 429 and int(headers["Retry-After"]) > 0
        status, headers, _ = await at(env, "2001:db8:0:1::1").password("manager")  # the next /64
        assert headers.get("Location") == "/_gateway/2fa", status


async def test_ipv4_mapped_address_shares_the_ipv4_lock(tmp_path, at):
    policy = policy_with(lockout={"per_ip": LockoutRule(failures=2, within=900, lock_for=3600)})
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        assert (await at(env, "::ffff:10.0.0.1").password("alice", "wrong"))[0] == 200
        assert (await at(env, "10.0.0.1").password("bob", "wrong"))[0] == 200
        for ip in ("10.0.0.1", "::ffff:10.0.0.1", "::ffff:a00:1"):
            status, _, _ = await at(env, ip).password("manager")
            assert status == 429, ip


async def test_captcha_after_failures_counts_the_ipv6_64(tmp_path, at):
    policy = policy_with(captcha={"when": ["after_failures"], "after_failures": 2, "difficulty": 1000})
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        assert (await at(env, "2001:db8::1").password("alice", "wrong"))[0] == 200
        assert (await at(env, "2001:db8::2").password("bob", "wrong"))[0] == 200
        status, headers, _ = await at(env, "2001:db8::3").password("manager")
        assert status == 303 and headers["Location"].startswith("/_gateway/captcha")


async def test_known_network_is_slowed_not_locked(tmp_path, at):
    async with login_env(tmp_path, policy=policy_with(), config_overrides=OVERRIDES) as env:
        # An attacker on the internet locks alice, as anyone could ...
        outside = at(env, "203.0.113.9")
        for _ in range(5):
            assert (await outside.password("alice", "wrong"))[0] == 200
        assert (await outside.password("alice"))[0] == 429
        # ... but at the hotel (127.0.0.1 is in hotel_lan) alice still signs in.
        desk = at(env, None)
        status, headers, _ = await desk.password("alice")
        assert headers.get("Location") == "/_gateway/2fa", status

        # Failures from inside earn a growing wait, never a lock.
        bob = at(env, None)
        for _ in range(5):
            assert (await bob.password("bob", "wrong"))[0] == 200
        status, headers, _ = await bob.password("bob")
        assert status == 429 and headers["Retry-After"] == "1"
        env.clock.advance(1)
        assert (await bob.password("bob", "wrong"))[0] == 200  # the sixth failure: 2 s
        status, headers, _ = await bob.password("bob")
        assert status == 429 and headers["Retry-After"] == "2"
        env.clock.advance(2)
        status, headers, _ = await bob.password("bob")  # the right password after the wait
        assert headers.get("Location") == "/_gateway/2fa", status
        # From the internet, failures at the hotel still lock the account.
        assert (await at(env, "203.0.113.9").password("bob"))[0] == 429


async def test_inside_known_networks_lock_when_the_policy_says_so(tmp_path, at):
    policy = policy_with(lockout={"inside_known_networks": "lock"})
    async with login_env(tmp_path, policy=policy, config_overrides=OVERRIDES) as env:
        desk = at(env, None)
        for _ in range(5):
            assert (await desk.password("bob", "wrong"))[0] == 200
        env.clock.advance(120)
        assert (await desk.password("bob"))[0] == 429
