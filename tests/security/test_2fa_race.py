"""Issue 8, item 3: parallel wrong codes must not outrun `max_attempts` or the lockout.

The attack: 150 wrong codes sent at once on one pending login were all evaluated (the
attempt counter was a read-modify-write of the pending record), and the right code then
still gave a session although the user was locked. Here the same burst is fired over real
HTTP, on the in-memory store and on Redis shared by two gateway processes; the number of
codes the gateway evaluated is read from the login history it records (one
`second_factor_failed` row per evaluated wrong code), not from the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from pathlib import Path

import aiohttp
import pyotp
import yaml

from gateway.audit.logins import recent_logins
from gateway.auth.keys import KeyRing
from gateway.db import open_database
from gateway.policy import load_policy
from gateway.policy.schema import Policy
from tests.harness import serve_app
from tests.login_env import DEMO_PASSWORDS, Browser, ForwardedBrowser, login_env
from tests.processes import ROOT, gateway_process

BURST = 150
MAX_ATTEMPTS = 5  # policies/default.yaml second_factor.max_attempts


def wrong_codes(secret: str, now: float, count: int) -> list[str]:
    """`count` codes none of which is valid around `now` (a window of two steps either side)."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(now + 30 * step) for step in range(-2, 3)}
    chooser = random.Random(8)
    codes: list[str] = []
    while len(codes) < count:
        code = f"{chooser.randrange(1_000_000):06d}"
        if code not in valid:
            codes.append(code)
    return codes


async def evaluated_codes(database_url: str, user: str) -> int:
    """Wrong codes the gateway evaluated, as its login history records them."""
    database = await open_database(database_url)
    try:
        rows = await recent_logins(database, user, limit=1000)
    finally:
        await database.close()
    return sum(1 for row in rows if row["outcome"] == "second_factor_failed")


async def test_parallel_wrong_codes_on_the_memory_store(tmp_path):
    async with login_env(tmp_path) as env:
        owner, attacker = Browser(env), Browser(env)
        try:
            await owner.password("alice")
            await owner.enroll("alice")
            env.clock.advance(30)
            status, headers, _ = await attacker.password("alice")
            assert headers.get("Location") == "/_gateway/2fa", status
            csrf, _ = await attacker.challenge_form()
            answers = await asyncio.gather(*(
                attacker.request("POST", "/_gateway/2fa", data={"csrf": csrf, "action": "verify", "code": code})
                for code in wrong_codes(env.secrets["alice"], env.clock(), BURST)
            ))
            assert all(status in (401, 429, 303) for status, _, _ in answers)
            evaluated = await evaluated_codes(env.config.resolved_database_url, "alice")
            assert 1 <= evaluated <= MAX_ATTEMPTS

            # The right code afterwards is refused (the pending login is over; a request rate
            # limit may answer first), and the pending login is gone.
            status, headers, _ = await attacker.request(
                "POST", "/_gateway/2fa", data={"csrf": csrf, "action": "verify", "code": env.code("alice")}
            )
            assert (status, headers.get("Location")) in ((303, "/login"), (429, None))
            assert attacker.cookie("gw_session") is None
            status, headers, _ = await attacker.request("GET", "/_gateway/2fa")
            assert status == 303 and headers["Location"] == "/login"
        finally:
            for browser in (owner, attacker):
                await browser.close()


def _process_policy() -> dict:
    """The demo PMS's login rule from policies/default.yaml; open enrollment, so the 2FA page
    shows the new secret; everything else (max_attempts 5, lockouts) the schema's defaults."""
    default = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    return {"login": default["login"], "second_factor": {"enrollment": "open"}}


async def _password(client: aiohttp.ClientSession, url: str, user: str) -> None:
    async with client.get(url + "/login") as response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', await response.text()).group(1)
    body = {"username": user, "password": DEMO_PASSWORDS[user], "csrf_token": token}
    async with client.post(url + "/login", data=body, headers={"Origin": url}, allow_redirects=False) as response:
        assert response.headers.get("Location") == "/_gateway/2fa", response.status


async def _code(client: aiohttp.ClientSession, url: str, **body: str) -> tuple[int, str]:
    # A JSON body: the gateway's own pages accept it without a form token (no CORS preflight
    # is ever granted), so the burst can be split across both gateways.
    async with client.post(url + "/_gateway/2fa", json=body, allow_redirects=False) as response:
        return response.status, response.headers.get("Location", "")


async def _start_together(stack: contextlib.ExitStack, processes: list) -> list[str]:
    """Start gateway processes in parallel (each start is mostly Python imports); every one
    that started is stopped by `stack`, also when another failed."""
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(
        *(loop.run_in_executor(None, process.__enter__) for process in processes), return_exceptions=True
    )
    for process, result in zip(processes, results):
        if not isinstance(result, BaseException):
            stack.push(process)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [url for url, _ in results]


async def test_parallel_wrong_codes_across_two_gateway_processes_on_redis(
    tmp_path: Path, redis_url: str, postgres_database_url: str
):
    from gateway.demo import DemoSettings, create_app

    shared = {
        "store_url": f"{redis_url}?prefix=gwtest-{uuid.uuid4().hex[:12]}:",
        "database_url": postgres_database_url,
        "key_file": str(tmp_path / "secret.key"),
    }
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    KeyRing.load(tmp_path / "secret.key", None)  # one key for both, made before either starts
    await (await open_database(postgres_database_url)).close()  # and the schema
    async with serve_app(create_app(DemoSettings())) as pms:
        with contextlib.ExitStack() as stack:
            first, second = await _start_together(stack, [
                gateway_process(tmp_path / name, pms, _process_policy(), shared) for name in ("a", "b")
            ])
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as owner:
                await _password(owner, first, "alice")
                async with owner.get(first + "/_gateway/2fa") as response:
                    secret = re.search(r'id="secret">([A-Z2-7]+)<', await response.text()).group(1)
                assert (await _code(owner, first, action="enroll", code=pyotp.TOTP(secret).now()))[0] == 200
                assert (await _code(owner, first, action="continue"))[0] in (302, 303)

            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as attacker:
                await _password(attacker, first, "alice")
                codes = wrong_codes(secret, time.time(), BURST)
                answers = await asyncio.gather(*(
                    _code(attacker, (first, second)[i % 2], action="verify", code=code) for i, code in enumerate(codes)
                ))
                assert {status for status, _ in answers} <= {401, 429, 303}
                # The right code, on either gateway, is refused (a request rate limit may
                # answer first), and the pending login is over everywhere.
                right = pyotp.TOTP(secret).now()
                for url in (second, first):
                    assert await _code(attacker, url, action="verify", code=right) in ((303, "/login"), (429, ""))
                    async with attacker.get(url + "/_gateway/2fa", allow_redirects=False) as response:
                        assert (response.status, response.headers.get("Location")) == (303, "/login")
                assert not [c for c in attacker.cookie_jar if c.key == "gw_session"]
    assert 1 <= await evaluated_codes(postgres_database_url, "alice") <= MAX_ATTEMPTS


def _outside_policy() -> Policy:
    policy = load_policy("policies/default.yaml")
    # The attacker's wrong passwords reach the PMS without a captcha.
    return policy.model_copy(update={"captcha": policy.captcha.model_copy(update={"when": []})})


async def test_a_user_locked_meanwhile_is_refused_at_the_code_step(tmp_path):
    overrides = {"trusted_proxies": "[127.0.0.0/8]"}
    async with login_env(tmp_path, policy=_outside_policy(), config_overrides=overrides) as env:
        enrolling = ForwardedBrowser(env, "198.51.100.7")  # outside the hotel's networks
        owner = ForwardedBrowser(env, "198.51.100.7")
        attacker = ForwardedBrowser(env, "203.0.113.9")
        try:
            await enrolling.password("alice")
            await enrolling.enroll("alice")
            env.clock.advance(30)
            status, headers, _ = await owner.password("alice")
            assert headers.get("Location") == "/_gateway/2fa", status
            for _ in range(5):  # per_user: 5 failures lock alice
                status, _, _ = await attacker.password("alice", "wrong")
                assert status == 200
            status, headers, _ = await owner.submit(action="verify", code=env.code("alice"))
            assert status == 429 and "Retry-After" in headers
            assert owner.cookie("gw_session") is None
            status, _, _ = await owner.request("GET", "/_gateway/2fa")
            assert status == 303  # the pending login ended with the refusal
        finally:
            for browser in (enrolling, owner, attacker):
                await browser.close()
