"""Rate limits (`rate_limits:`), through a real gateway in front of the demo PMS, on the
memory store and on Redis, and shared by two gateways on one Redis (two workers).

Window semantics are checked on `limits`' own clock (time-machine moves `time.time()`,
which `limits` reads), never on wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import time_machine
from pydantic import ValidationError

from gateway.audit.query import AuditReader, QueryFilter
from gateway.policy import load_policy
from gateway.policy.rate_limits import RateLimitRule
from gateway.policy.schema import CaptchaPolicy, Policy
from gateway.risk.rate_limits import ADDRESS, IDENTITY, RateLimiter, storage_for
from gateway.store import create_store
from tests.login_env import Browser, login_env, store_url_for

PROXIED = {"trusted_proxies": "[127.0.0.1/32]"}  # X-Forwarded-For names the client


def policy_with(*rules: RateLimitRule) -> Policy:
    policy = load_policy("policies/default.yaml")
    return policy.model_copy(update={"rate_limits": list(rules), "captcha": CaptchaPolicy(when=[])})


class BrowserAt(Browser):
    """A browser behind the trusted front proxy, at `address`."""

    def __init__(self, env, address: str) -> None:
        super().__init__(env)
        self.address = address

    async def request(self, method: str, path: str, **kwargs):
        kwargs.setdefault("headers", {})["X-Forwarded-For"] = self.address
        return await super().request(method, path, **kwargs)


@contextlib.asynccontextmanager
async def browsers(env, *addresses: str):
    opened = [BrowserAt(env, a) for a in addresses]
    try:
        yield opened
    finally:
        for b in opened:
            await b.close()


async def audited(env, decision: str, at_least: int = 1) -> list[dict]:
    """The audit records with `decision`, once the writer has flushed them."""
    reader = AuditReader(env.services.database, env.services.audit.keys)
    for _ in range(200):
        records = [r async for r in reader.records(QueryFilter(decision=decision))]
        if len(records) >= at_least:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {decision} audit record")


@pytest.fixture(params=["memory", "redis"])
def store_url(request):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return store_url_for(request.param, redis_url)


async def test_login_per_address_answers_429_with_retry_after_and_is_audited(tmp_path, store_url):
    policy = policy_with(RateLimitRule(login=True, key="address", rate="3/minute"))
    async with login_env(tmp_path, store_url, policy=policy, config_overrides=PROXIED) as env:
        async with browsers(env, "81.2.69.160", "89.160.20.112") as (first, other):
            for user in ("alice", "bob", "manager"):  # three tries, any usernames: one address
                status, _, _ = await first.password(user, "wrong")
                assert status != 429
            status, headers, page = await first.request(
                "POST", "/login", data="username=alice&password=x",
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept-Language": "fr"})
            assert status == 429
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert "Trop de demandes" in page and f"patienter {headers['Retry-After']} secondes" in page
            # The login page itself (GET) and another address are not counted by the rule.
            assert (await first.request("GET", "/login"))[0] == 200
            status, headers, _ = await other.password("alice")
            assert status == 303 and headers["Location"] == "/_gateway/2fa"
            # Scripts get JSON with the same facts.
            status, headers, body = await first.request(
                "POST", "/login", json={"username": "alice", "password": "x"}, headers={"Accept": "application/json"})
            assert status == 429 and '"error": "rate_limited"' in body and "Retry-After" in headers
        records = await audited(env, "rate_limited", 2)
        assert all(r["status"] == 429 and r["path"] == "/login" for r in records)
        assert "rate limit 3/minute per address" in records[0]["reason"]


async def test_login_per_username_leaves_other_users_alone(tmp_path, store_url):
    policy = policy_with(RateLimitRule(login=True, key="user", rate="2/minute"))
    async with login_env(tmp_path, store_url, policy=policy, config_overrides=PROXIED) as env:
        async with browsers(env, "81.2.69.160", "89.160.20.112") as (here, there):
            assert (await here.password("alice"))[0] == 303
            assert (await there.password("ALICE "))[0] == 303  # the same user, another address
            status, headers, _ = await here.password("alice")
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert (await here.password("bob"))[0] == 303  # another username from the same address
        [record] = await audited(env, "rate_limited")
        assert record["user"] == "alice" and "per user" in record["reason"]


async def test_ipv6_clients_are_counted_per_64(tmp_path):
    policy = policy_with(RateLimitRule(login=True, key="address", rate="2/minute"))
    async with login_env(tmp_path, policy=policy, config_overrides=PROXIED) as env:
        async with browsers(env, "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1") as (a, b, c):
            assert (await a.password("alice"))[0] == 303
            assert (await b.password("bob"))[0] == 303
            assert (await a.password("manager"))[0] == 429  # one /64: one client
            assert (await b.password("manager"))[0] == 429
            assert (await c.password("manager"))[0] == 303  # the next /64 is someone else


async def test_gateway_pages_are_limited_per_address(tmp_path, store_url):
    policy = policy_with(
        RateLimitRule(path="^/_gateway/(2fa|captcha)$", methods=["POST"], key="address", rate="2/minute"))
    async with login_env(tmp_path, store_url, policy=policy, config_overrides=PROXIED) as env:
        async with browsers(env, "81.2.69.160", "89.160.20.112") as (first, other):
            for _ in range(2):
                status, _, _ = await first.request("POST", "/_gateway/2fa", data={"action": "verify", "code": "1"})
                assert status != 429
            # Another spelling of the same page reaches the same route, and the same count.
            status, headers, page = await first.request("POST", "/_gateway/%32fa", data={"action": "verify"})
            assert status == 429 and int(headers["Retry-After"]) >= 1 and "Too many requests" in page
            assert (await first.request("POST", "/_gateway/captcha", data={}))[0] == 429
            assert (await first.request("GET", "/_gateway/2fa"))[0] != 429  # GET is not counted
            assert (await other.request("POST", "/_gateway/2fa", data={"action": "verify"}))[0] != 429
        records = await audited(env, "rate_limited", 2)
        assert {r["path"] for r in records} >= {"/_gateway/2fa", "/_gateway/captcha"}
        assert all(r["status"] == 429 for r in records)


async def test_staff_requests_per_session_and_per_user(tmp_path, store_url):
    policy = policy_with(
        RateLimitRule(path="^/reservations", methods=["GET"], key="session", rate="2/minute"),
        RateLimitRule(path="^/guests", key="user", rate="1/minute", strategy="fixed-window"),
    )
    async with login_env(tmp_path, store_url, policy=policy) as env:
        alice, bob = Browser(env), Browser(env)
        try:
            for browser, user in ((alice, "alice"), (bob, "bob")):
                await browser.password(user)
                await browser.enroll(user)
            assert [(await alice.request("GET", "/reservations"))[0] for _ in range(3)] == [200, 200, 429]
            assert (await bob.request("GET", "/reservations"))[0] == 200  # another session
            assert (await alice.request("GET", "/guests"))[0] != 429
            status, headers, _ = await alice.request("GET", "/guests")
            assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
            assert (await bob.request("GET", "/guests"))[0] != 429  # another user
            # A request without a session is not counted by a session rule: it signs in.
            anonymous = Browser(env)
            try:
                assert [(await anonymous.request("GET", "/reservations"))[0] for _ in range(3)] == [303] * 3
            finally:
                await anonymous.close()
        finally:
            await alice.close()
            await bob.close()
        records = await audited(env, "rate_limited", 2)
        assert {r["user"] for r in records} == {"alice"}


async def test_two_workers_share_the_counts_through_redis(tmp_path, redis_url):
    store_url = store_url_for("redis", redis_url)
    policy = policy_with(
        RateLimitRule(login=True, key="address", rate="3/minute"),
        RateLimitRule(path="^/_gateway/2fa$", methods=["POST"], key="address", rate="2/minute",
                      strategy="fixed-window"),
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(login_env(tmp_path, store_url, policy, config_overrides=PROXIED))
        second = await stack.enter_async_context(
            login_env(tmp_path, store_url, policy, pms_url=first.pms_url, config_overrides=PROXIED))
        at_first, at_second = BrowserAt(first, "81.2.69.160"), BrowserAt(second, "81.2.69.160")
        try:
            assert (await at_first.password("alice"))[0] == 303
            assert (await at_second.password("bob"))[0] == 303
            assert (await at_first.password("manager"))[0] == 303
            assert (await at_second.password("manager"))[0] == 429  # the fourth, counted by both
            assert (await at_first.request("POST", "/_gateway/2fa", data={}))[0] != 429
            assert (await at_second.request("POST", "/_gateway/2fa", data={}))[0] != 429
            status, headers, _ = await at_first.request("POST", "/_gateway/2fa", data={})
            assert status == 429 and int(headers["Retry-After"]) >= 1
        finally:
            await at_first.close()
            await at_second.close()
        await audited(second, "rate_limited")
        await audited(first, "rate_limited")


# -- window semantics on limits' own clock ------------------------------------------------


@contextlib.asynccontextmanager
async def limiter_on(kind: str, redis_url: str | None, *rules: RateLimitRule):
    store = create_store(store_url_for(kind, redis_url))
    policy = Policy(rate_limits=list(rules))
    limiter = RateLimiter(lambda: policy, storage_for(store))
    try:
        yield limiter
    finally:
        await limiter.close()
        await store.close()


async def _hit(limiter: RateLimiter, address: str = "192.0.2.1") -> int | None:
    """None when allowed, else the Retry-After the refusal carries."""
    refusal = await limiter.check("POST", "/login", {"address": address}, ADDRESS)
    return None if refusal is None else refusal.retry_after


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_moving_window_counts_any_span_of_the_period(kind, request):
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    rule = RateLimitRule(login=True, rate="2/minute", strategy="moving-window")
    with time_machine.travel(float(int(time.time())), tick=False) as clock:
        async with limiter_on(kind, redis_url, rule) as limiter:
            assert await _hit(limiter) is None  # t=0
            clock.shift(50)
            assert await _hit(limiter) is None  # t=50
            clock.shift(5)
            assert await _hit(limiter) == 5  # t=55: both in the last minute; the first leaves at 60
            clock.shift(6)
            assert await _hit(limiter) is None  # t=61: only the one at 50 is still in the window
            assert await _hit(limiter) == 49  # full again until the one at 50 leaves (t=110)
            assert await _hit(limiter, "192.0.2.2") is None  # another address, its own count


async def test_fixed_window_resets_whole_a_period_after_its_first_request():
    """Memory storage: its expiry is on `time.time()`, so the clock can move. (On Redis a
    fixed window ends by the server's own key expiry, which no test clock reaches.)"""
    rule = RateLimitRule(login=True, rate="2/minute", strategy="fixed-window")
    with time_machine.travel(float(int(time.time())), tick=False) as clock:
        async with limiter_on("memory", None, rule) as limiter:
            assert await _hit(limiter) is None  # t=0 opens the window
            clock.shift(50)
            assert await _hit(limiter) is None
            clock.shift(5)
            assert await _hit(limiter) == 5  # t=55: the window opened at 0 ends at 60
            clock.shift(6)
            assert await _hit(limiter) is None  # t=61: a new window, counted from zero ...
            assert await _hit(limiter) is None  # ... so two more pass (a moving window lets one)
            assert await _hit(limiter) == 60


async def test_fixed_window_on_redis_ends_a_period_after_its_first_request(redis_url):
    rule = RateLimitRule(login=True, rate="2/minute", strategy="fixed-window")
    async with limiter_on("redis", redis_url, rule) as limiter:
        assert await _hit(limiter) is None
        assert await _hit(limiter) is None
        assert 55 <= await _hit(limiter) <= 60  # the key's expiry, set by the first request


async def test_rules_apply_only_to_their_key_kinds_and_matches():
    rules = [
        RateLimitRule(path="^/reports", methods=["get"], key="user", rate="1/minute"),
        RateLimitRule(path="^/api/", key="api_client", rate="1/minute"),
    ]
    async with limiter_on("memory", None, *rules) as limiter:
        keys = {"address": "192.0.2.1", "user": "alice", "session": None, "api_client": None}
        assert await limiter.check("GET", "/reports/1", keys, ADDRESS) is None  # not an address rule
        assert await limiter.check("GET", "/reports/1", keys, IDENTITY) is None
        assert await limiter.check("POST", "/reports/1", keys, IDENTITY) is None  # POST not counted
        assert await limiter.check("GET", "/x/reports", keys, IDENTITY) is None  # anchored
        refusal = await limiter.check("GET", "/reports/2", keys, IDENTITY)
        assert refusal is not None and refusal.rule.key == "user"
        assert await limiter.check("GET", "/api/x", keys, IDENTITY) is None  # no API client: not counted
        client = {**keys, "user": None, "api_client": "channel-manager"}
        assert await limiter.check("GET", "/api/x", client, IDENTITY) is None
        assert await limiter.check("GET", "/api/x", client, IDENTITY) is not None
        assert await limiter.check("GET", "/api/x", {**client, "api_client": "other"}, IDENTITY) is None


@pytest.mark.parametrize("rule, message", [
    ({"path": "^/x", "rate": "10/minut"}, "is not a rate"),
    ({"path": "^/x", "rate": "10/minute;100/hour"}, "one rate per rule"),
    ({"path": "^/x", "rate": "0/minute"}, "at least one request"),
    ({"rate": "10/minute"}, "`path`.*`login: true`"),
    ({"path": "^/x", "login": True, "rate": "10/minute"}, "`path`.*`login: true`"),
    ({"login": True, "methods": ["GET"], "rate": "10/minute"}, "leave `methods` out"),
    ({"path": "^/x", "rate": "10/minute", "key": "room"}, "key"),
    ({"path": "^/x", "rate": "10/minute", "strategy": "sliding"}, "strategy"),
])
def test_bad_rules_are_refused_with_a_clear_message(rule, message):
    with pytest.raises(ValidationError, match=message.replace("`", ".").replace("(", ".")):
        Policy(rate_limits=[rule])


def test_the_defaults_cover_the_login_and_the_gateways_own_pages():
    rules = Policy().rate_limits
    assert {(r.login, r.key) for r in rules if r.login} == {(True, "address"), (True, "user")}
    pages = [r for r in rules if r.path]
    assert any(r.key == "address" and "2fa" in r.path and "captcha" in r.path and r.methods == ["POST"] for r in pages)
