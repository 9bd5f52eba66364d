"""Issue 8, item 15 (device id): an attacker-chosen `gw_device` is never adopted.

The login used to take whatever `gw_device` the browser presented as the device id of
the new session, so a value planted in a victim's browser was known to the attacker. Now
only an id the gateway issued and signed is kept; anything else gets a fresh one.
Remembered devices keep working: the id they are bound to is the gateway's own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.auth.device_ids import DeviceIds
from gateway.auth.keys import KeyRing
from gateway.policy import load_policy
from tests.login_env import Browser, login_env


def device_cookies_sent(browser: Browser) -> list[str]:
    return [c.split(";")[0].split("=", 1)[1] for c in browser.set_cookies if c.startswith("gw_device=")]


FORGED = ["attacker-chosen", "x" * 43 + "." + "A" * 32, "a.b.c", ""]


@pytest.mark.parametrize("forged", FORGED, ids=["plain", "signature-shaped", "dots", "empty"])
async def test_forged_device_cookie_is_replaced_at_login(tmp_path, forged):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            browser.client.cookie_jar.update_cookies({"gw_device": forged})
            await browser.password("alice")
            await browser.enroll("alice")
            issued = device_cookies_sent(browser)
            assert issued and forged not in issued
            session = (await env.sessions.sessions_of("alice"))[0]
            assert session.device_id == issued[-1] != forged
        finally:
            await browser.close()


async def test_a_device_id_from_another_gateway_key_is_not_adopted(tmp_path):
    stranger = DeviceIds(KeyRing([("other", os.urandom(32))])).issue()
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            browser.client.cookie_jar.update_cookies({"gw_device": stranger})
            await browser.password("alice")
            assert device_cookies_sent(browser)[-1] != stranger
        finally:
            await browser.close()


def test_device_ids_survive_a_key_rotation_and_cannot_be_altered():
    old = KeyRing([("k1", os.urandom(32))])
    issued = DeviceIds(old).issue()
    rotated = KeyRing([("k2", os.urandom(32)), ("k1", old._key("k1"))])
    assert DeviceIds(rotated).is_ours(issued)
    assert DeviceIds(rotated).adopt(issued) == issued
    nonce, signature = issued.split(".")
    assert not DeviceIds(rotated).is_ours(nonce[:-1] + ("A" if nonce[-1] != "A" else "B") + "." + signature)
    assert not DeviceIds(KeyRing([("k3", os.urandom(32))])).is_ours(issued)


async def test_a_signed_device_id_is_kept_and_remembered_devices_still_work(tmp_path):
    text = Path("policies/default.yaml").read_text(encoding="utf-8")
    assert "  remember_device: false\n" in text
    policy_file = tmp_path / "remember.yaml"
    policy_file.write_text(text.replace("  remember_device: false\n", "  remember_device: 30d\n"), encoding="utf-8")
    async with login_env(tmp_path, policy=load_policy(policy_file)) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            device = device_cookies_sent(browser)[-1]
            await browser.request("GET", "/logout")
            await browser.password("alice")
            env.clock.advance(30)
            status, _, _ = await browser.submit(action="verify", code=env.code("alice"), remember="on")
            assert status in (302, 303) and browser.cookie("gw_remember")
            assert set(device_cookies_sent(browser)) == {device}  # the gateway's own id is kept
            await browser.request("GET", "/logout")
            status, headers, _ = await browser.password("alice")
            assert status in (302, 303) and headers["Location"] == "/reservations"  # no second factor
        finally:
            await browser.close()
