"""The operator listener (health, metrics) and several worker processes on one port."""

from __future__ import annotations

import subprocess
import sys
import uuid

import aiohttp
import yaml

from tests.harness import free_port, serve_app
from tests.processes import ROOT, gateway_process
from tests.upstream_app import create_upstream

PUBLIC = {"login": {"public_paths": ["^/"]}}


async def test_admin_listener_reports_health_and_metrics(tmp_path):
    admin_port = free_port()
    async with serve_app(create_upstream()) as upstream:
        config = {"admin": {"enabled": True, "host": "127.0.0.1", "port": admin_port}}
        with gateway_process(tmp_path, upstream, PUBLIC, config) as (url, _):
            async with aiohttp.ClientSession() as client:
                for _ in range(3):
                    async with client.get(url + "/anything") as response:
                        assert response.status == 200
                async with client.get(url + "/_gateway/nope") as response:
                    assert response.status == 404
                async with client.get(f"http://127.0.0.1:{admin_port}/health") as response:
                    assert response.status == 200
                    assert await response.json() == {"status": "ok", "store": True, "database": True}
                async with client.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
                    text = await response.text()
            assert 'gateway_requests_total{decision="allowed",status="2xx"} 3.0' in text
            assert "gateway_upstream_duration_seconds_count 3.0" in text


async def test_two_workers_share_the_port_through_redis(tmp_path, redis_url):
    async with serve_app(create_upstream()) as upstream:
        config = {"listen": {"workers": 2}, "store_url": f"{redis_url}?prefix=gwtest-{uuid.uuid4().hex[:8]}:"}
        with gateway_process(tmp_path, upstream, PUBLIC, config) as (url, process):
            async with aiohttp.ClientSession() as client:
                for _ in range(50):
                    async with client.get(url + "/x", headers={"Connection": "close"}) as response:
                        assert response.status == 200
            children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
            commands = [open(f"/proc/{pid}/cmdline", "rb").read() for pid in children]
            workers = [c for c in commands if b"spawn_main" in c and b"resource_tracker" not in c]
            assert len(workers) == 1, commands  # the second worker process


def test_several_workers_need_a_shared_store(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"listen": {"workers": 2, "port": free_port()}, "data_dir": str(tmp_path)}))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "listen.workers is 2, but memory:// is one process's memory" in result.stderr
    assert "set store_url to redis://HOST:6379/0" in result.stderr
