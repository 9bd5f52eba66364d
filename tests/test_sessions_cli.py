"""`pms-gateway sessions list|revoke` against a running gateway's shared Redis store."""

from __future__ import annotations

import asyncio
import json

import yaml
from typer.testing import CliRunner

from gateway.cli import app
from tests.login_env import Browser, login_env, store_url_for


async def test_list_and_revoke_sessions_of_a_running_gateway(tmp_path, redis_url):
    store_url = store_url_for("redis", redis_url)
    async with login_env(tmp_path, store_url) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump({
                "store_url": store_url,
                "data_dir": str(env.config.data_dir),
                "database_url": env.config.database_url,
                "policy_paths": ["policies/default.yaml"],
            }))
            def cli(*args: str):  # the command runs its own event loop: give it a thread
                return asyncio.to_thread(CliRunner().invoke, app, [*args, "-c", str(config)])

            listed = await cli("sessions", "list", "--json")
            assert listed.exit_code == 0, listed.output
            rows = [json.loads(line) for line in listed.output.splitlines()]
            assert [(r["user"], r["login_type"], r["ip"]) for r in rows] == [("alice", "password+totp", "127.0.0.1")]

            revoked = await cli("sessions", "revoke", "alice")
            assert revoked.exit_code == 0 and "ended 1 session(s) of alice" in revoked.output
            status, headers, _ = await browser.request("GET", "/reservations")
            assert status == 303
            for _ in range(100):  # the gateway hears of it and ends the PMS session too
                if await env.pms_users_alive() == []:
                    break
                await asyncio.sleep(0.05)
            assert await env.pms_users_alive() == []
            assert "no live sessions" in (await cli("sessions", "list")).output
        finally:
            await browser.close()


def test_memory_store_is_explained_not_listed_as_empty(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "policy_paths": ["policies/default.yaml"]}))
    result = CliRunner().invoke(app, ["sessions", "list", "-c", str(config)])
    assert result.exit_code == 1 and "kept in the gateway process's memory" in result.output
