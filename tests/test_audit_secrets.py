"""Secrets never reach the audit store or the logs: a password, a TOTP code and a session
cookie planted in query strings, headers and bodies (and a real login attempt) are then
looked for in every file of the data directory, the decrypted export, the login history
and the gateway's own log output."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from typer.testing import CliRunner

from gateway.cli import app

from tests.harness import serve_app
from tests.test_audit_support import GatewayProcess, gateway_environ
from tests.upstream_app import create_upstream

PASSWORD = "Pw-9f3Kq!zz-Planted"
TOTP_CODE = "907153"
COOKIE = "ck-7Hs93LmQ-planted"
SECRETS = (PASSWORD, TOTP_CODE, COOKIE)

pytestmark = pytest.mark.slow


def variants(secret: str) -> set[str]:
    """How a secret could be spelled where it leaks: as is, URL- and base64-encoded."""
    return {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode().rstrip("=")}


async def plant(base_url: str) -> int:
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    requests = [
        ("POST", "/login", {"data": {"username": "alice", "password": PASSWORD}}),
        ("POST", "/login", {"json": {"username": "alice", "password": PASSWORD, "code": TOTP_CODE}}),
        ("GET", f"/reservations/42?password={quote(PASSWORD)}&code={TOTP_CODE}&sid={COOKIE}", {}),
        ("GET", f"/search?q={quote(PASSWORD)}&otp={TOTP_CODE}", {}),
        ("GET", "/reservations/43", {"headers": {"Cookie": f"PMSSESSID={COOKIE}; gw_session={COOKIE}",
                                                 "Authorization": f"Basic {basic}",
                                                 "X-Api-Key": PASSWORD, "X-Otp": TOTP_CODE}}),
        ("PUT", "/guests/7", {"json": {"password": PASSWORD, "totp": TOTP_CODE, "cookie": COOKIE}}),
        ("POST", "/notes", {"data": f"{PASSWORD} {TOTP_CODE} {COOKIE}".encode()}),
        ("POST", "/_gateway/login/code", {"data": {"code": TOTP_CODE}}),
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        for method, path, options in requests:
            headers = {"X-Forwarded-For": "81.2.69.160", "Origin": base_url, **options.pop("headers", {})}
            async with client.request(method, base_url + path, headers=headers, allow_redirects=False,
                                      **options) as response:
                await response.read()
    return len(requests)


async def cli(environ: dict[str, str], *args: str) -> str:
    """A pms-gateway command in-process (its own event loop, in a thread)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=environ)
    assert result.exit_code == 0, result.output
    return result.output


async def test_planted_secrets_appear_nowhere(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("audit:\n  flush_interval: 0.1s\n")  # query values dropped (the default)
    data_dir = tmp_path / "data"
    async with serve_app(create_upstream(tmp_path)) as upstream:
        environ = gateway_environ(upstream, data_dir, policy_file, PMS_GATEWAY_LOG__LEVEL="debug")
        gateway = GatewayProcess(environ, tmp_path / "gateway.log")
        await gateway.start()
        sent = await plant(gateway.url)
        assert await gateway.terminate() == 0
    exported = await cli(environ, "audit", "export", "--format", "jsonl")
    logins = await cli(environ, "logins", "--json")
    assert exported.count("\n") >= sent - 1, exported  # every proxied request is in the trail
    assert '"path": "/reservations/42"' in exported and '"reservation": "42"' in exported
    assert '"username": "alice"' in logins  # the login attempt was recorded...
    places = {"export": exported, "logins": logins, "log": (tmp_path / "gateway.log").read_text(errors="replace")}
    for file in data_dir.rglob("*"):
        if file.is_file() and not file.name.endswith(".key"):
            places[str(file.relative_to(data_dir))] = file.read_bytes().decode("latin-1")
    assert "gateway.db" in places and "heads.jsonl" in places
    leaks = [(secret, where) for secret in SECRETS for variant in variants(secret)
             for where, text in places.items() if variant in text]
    assert not leaks, f"secrets found: {leaks}"
