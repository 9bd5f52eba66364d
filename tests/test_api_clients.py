"""API clients (`api_clients:`) through a real gateway: tokens, networks, limits, audit.

The demo PMS's JSON API (`/api/v1/...`) wants its own `Authorization: Token ...`; the
channel manager presents a gateway token, which the gateway swaps for the stored PMS
credential. Every refusal is JSON, never the HTML login page.
"""

from __future__ import annotations

import aiohttp
import pytest

from gateway.access.api_tokens import ApiTokens, api_token_hash
from gateway.demo.channel_manager import synchronise
from gateway.demo.guest_api import API_TOKEN
from gateway.policy import load_policy
from gateway.policy.schema import Policy
from tests.audit_wait import audited
from tests.harness import serve_app
from tests.login_env import login_env, store_url_for
from tests.upstream_app import create_upstream

from datetime import timedelta


def policy_with_client(networks: list[str] | None = None, rate: str = "300/minute", **extra) -> Policy:
    data = load_policy("policies/default.yaml").model_dump(mode="json", exclude_unset=True)
    data["api_clients"] = {
        "channel-manager": {"paths": ["^/api/v1/"], "methods": ["GET", "POST"],
                            "networks": networks or ["127.0.0.1/32"], "rate_limit": rate, **extra},
    }
    return Policy.model_validate(data)


async def issue(env, name: str = "channel-manager", credential: bool = True) -> str:
    tokens = ApiTokens(env.services.database, env.services.keyring)
    token, _ = await tokens.issue(name, timedelta(days=30))
    if credential:
        await tokens.set_upstream_credential(name, "Authorization", f"Token {API_TOKEN}")
    return token


async def call(env, path: str, token: str | None = None, method: str = "GET", **kwargs) -> tuple[int, dict, object]:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as client:
        async with client.request(method, env.url + path, headers=headers, allow_redirects=False, **kwargs) as r:
            body = await r.json(content_type=None) if "json" in r.headers.get("Content-Type", "") else await r.text()
            return r.status, dict(r.headers), body


async def test_channel_manager_passes_with_its_token_and_is_audited_by_name(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client()) as env:
        token = await issue(env)
        assert token.startswith("pgw_") and len(token) >= 4 + 22  # >= 128 random bits
        async with aiohttp.ClientSession() as client:
            result = await synchronise(env.url, token, client)  # no person, no second factor
        assert result.rooms > 0 and result.confirmed is not None
        records = await audited(env, lambda r: r["path"] == "/api/v1/availability")
        assert records[0]["user"] == "api:channel-manager" and records[0]["decision"] == "allowed"
        stored = (await ApiTokens(env.services.database, env.services.keyring).list())[0]
        assert token not in repr(stored) and stored.hint == token[:10]
        async with env.services.database.connect() as conn:
            from sqlalchemy import text
            dump = repr((await conn.execute(text("SELECT * FROM api_tokens"))).all())
            dump += repr((await conn.execute(text("SELECT * FROM audit_records"))).all())
        assert token not in dump and api_token_hash(token) in dump


async def test_token_is_stripped_and_cookies_never_reach_the_pms(tmp_path):
    async with serve_app(create_upstream()) as upstream:
        async with login_env(tmp_path, policy=policy_with_client(), pms_url=upstream) as env:
            token = await issue(env)
            status, _, seen = await call(env, "/api/v1/echo", token, headers={"Cookie": "PMSSESSID=stolen; gw_session=x; a=b"})
            assert status == 200
            headers = {k.lower(): v for k, v in seen["headers"]}
            assert headers["authorization"] == f"Token {API_TOKEN}"  # the PMS's own credential
            assert "cookie" not in headers and token not in repr(seen)


async def test_rate_limited_with_429_past_its_limit(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client(rate="3/minute")) as env:
        token = await issue(env)
        answers = [(await call(env, "/api/v1/availability", token))[:2] for _ in range(4)]
        assert [s for s, _ in answers] == [200, 200, 200, 429]
        assert int(answers[3][1]["Retry-After"]) >= 1 and answers[3][1]["Content-Type"].startswith("application/json")
        records = await audited(env, lambda r: r["decision"] == "rate_limited")
        assert records[0]["user"] == "api:channel-manager"


async def test_refused_from_a_network_it_is_not_allowed(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client(networks=["10.20.0.0/16"])) as env:
        token = await issue(env)
        status, _, body = await call(env, "/api/v1/availability", token)
        assert status == 403 and body["error"] == "network_not_allowed"
        records = await audited(env, lambda r: r["path"] == "/api/v1/availability")
        assert records[0]["user"] == "api:channel-manager" and records[0]["decision"] == "refused"


async def test_token_in_the_query_string_is_refused_and_not_recorded(tmp_path):
    policy = policy_with_client().model_copy()
    async with login_env(tmp_path, policy=policy) as env:
        token = await issue(env)
        status, _, body = await call(env, f"/api/v1/availability?access_token={token}")
        assert status == 400 and body["error"] == "token_in_query"
        status, _, _ = await call(env, f"/api/v1/availability?t={token.replace('_', '%5F')}")
        assert status == 400
        records = await audited(env, lambda r: r["reason"] == "API token in the query string")
        assert all(token not in repr(r) for r in records)


async def test_no_or_bad_token_on_an_api_path_gets_401_json_not_the_login_page(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client()) as env:
        await issue(env)
        status, headers, body = await call(env, "/api/v1/reservations", headers={"Accept": "text/html"})
        assert status == 401 and headers["Content-Type"].startswith("application/json")
        assert body["error"] == "session_required"
        status, _, body = await call(env, "/api/v1/reservations", "pgw_" + "A" * 43)
        assert status == 401 and body["error"] == "invalid_token"
        # A staff page without a session still goes to the login page.
        status, headers, _ = await call(env, "/reservations")
        assert status == 303 and headers["Location"].startswith("/login")


async def test_method_and_path_outside_the_client_are_refused(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client()) as env:
        token = await issue(env)
        assert (await call(env, "/api/v1/availability", token, method="DELETE"))[0] == 403
        status, _, body = await call(env, "/reservations", token)
        assert status == 403 and body["error"] == "not_allowed"


@pytest.mark.parametrize("kind", ["rotate", "revoke"])
async def test_rotate_keeps_the_old_token_for_the_overlap_and_revoke_ends_all(tmp_path, redis_url, kind):
    """Two workers (one database, one Redis): the CLI's revoke is in force on both at once."""
    store = store_url_for("redis", redis_url)
    policy = policy_with_client()
    async with login_env(tmp_path, store, policy=policy) as one, login_env(tmp_path, store, policy=policy) as two:
        token = await issue(one)
        assert (await call(one, "/api/v1/availability", token))[0] == 200
        assert (await call(two, "/api/v1/availability", token))[0] == 200
        tokens = ApiTokens(one.services.database, one.services.keyring)
        if kind == "rotate":
            new, _, shortened = await tokens.rotate("channel-manager", timedelta(days=30), timedelta(hours=1))
            assert shortened == 1
            for env in (one, two):
                assert (await call(env, "/api/v1/availability", token))[0] == 200  # within the overlap
                assert (await call(env, "/api/v1/availability", new))[0] == 200
            await tokens.rotate("channel-manager", timedelta(days=30), timedelta(seconds=0))
            assert (await call(two, "/api/v1/availability", new))[0] == 401  # the overlap is over
        else:
            assert await tokens.revoke("channel-manager") == 1
            for env in (one, two):
                status, _, body = await call(env, "/api/v1/availability", token)
                assert status == 401 and body["error"] == "invalid_token"


async def test_header_pattern_client_needs_the_pattern_and_its_network(tmp_path):
    async with serve_app(create_upstream()) as upstream:
        policy = policy_with_client(recognition="header_pattern", header="Authorization", pattern=r"Token [0-9a-f]{40}")
        async with login_env(tmp_path, policy=policy, pms_url=upstream) as env:
            pms_token = "Token " + "ab" * 20
            status, _, seen = await call(env, "/api/v1/x", headers={"Authorization": pms_token, "Cookie": "a=b"})
            assert status == 200
            headers = {k.lower(): v for k, v in seen["headers"]}
            assert headers["authorization"] == pms_token and "cookie" not in headers
            status, _, _ = await call(env, "/api/v1/x", headers={"Authorization": "Token short"})
            assert status == 401  # not the client's pattern: an API path without a session
            records = await audited(env, lambda r: r["path"] == "/api/v1/x" and r["decision"] == "allowed")
            assert records[0]["user"] == "api:channel-manager"
    policy = policy_with_client(
        networks=["10.0.0.0/8"], recognition="header_pattern", header="Authorization", pattern=r"Token [0-9a-f]{40}"
    )
    async with login_env(tmp_path / "b", policy=policy) as env:
        status, _, body = await call(env, "/api/v1/availability", headers={"Authorization": "Token " + "ab" * 20})
        assert status == 403 and body["error"] == "network_not_allowed"


async def test_api_client_skips_csrf_and_a_staff_session_is_not_used(tmp_path):
    async with login_env(tmp_path, policy=policy_with_client()) as env:
        token = await issue(env)
        status, _, body = await call(env, "/api/v1/reservations/1001/status", token, method="POST",
                                     json={"status": "Cancelled"}, headers={"Origin": "https://elsewhere.example"})
        assert status == 200 and body["status"] == "Cancelled"  # no Origin check for a token


def test_policy_refuses_an_api_client_without_networks_or_with_half_a_header_pattern():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="networks"):
        Policy.model_validate({"api_clients": {"cm": {"paths": ["^/api/"], "networks": []}}})
    with pytest.raises(ValidationError, match="needs `header` and `pattern`"):
        Policy.model_validate({"api_clients": {"cm": {"paths": ["^/api/"], "networks": ["10.0.0.0/8"],
                                                      "recognition": "header_pattern", "header": "X-Key"}}})
    with pytest.raises(ValidationError, match="neither a name under"):
        Policy.model_validate({"api_clients": {"cm": {"paths": ["^/api/"], "networks": ["office"]}}})
