"""Starting real servers on free loopback ports for the tests.

Everything here listens on 127.0.0.1 and is torn down by the fixture that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.config import Config, load_config
from gateway.policy.reload import PolicyHolder
from gateway.policy.schema import Policy
from gateway.proxy.exchange import Addon
from gateway.runtime import RunningGateway, start_gateway


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Run an aiohttp app on loopback; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or 0)
    await site.start()
    actual = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{actual}"
    finally:
        await runner.cleanup()


def gateway_config(upstream_url: str, port: int, **overrides: str) -> Config:
    environ = {
        "PMS_GATEWAY_PUBLIC_URLS": f"[http://127.0.0.1:{port}, http://gateway.test:{port}, http://localhost:{port}]",
        "PMS_GATEWAY_LISTEN__PORT": str(port),
        "PMS_GATEWAY_UPSTREAM__URL": upstream_url,
        "PMS_GATEWAY_POLICY_PATHS": "[]",
    }
    if engine := os.environ.get("PMS_GATEWAY_LISTEN__ENGINE"):  # the whole suite on another engine
        environ["PMS_GATEWAY_LISTEN__ENGINE"] = engine
    environ.update({f"PMS_GATEWAY_{k.upper()}": v for k, v in overrides.items()})
    return load_config(None, environ=environ)


@dataclass
class GatewayUnderTest:
    url: str
    port: int
    running: RunningGateway
    config: Config


@contextlib.asynccontextmanager
async def run_gateway(
    upstream_url: str,
    policy: Policy | None = None,
    addons: Sequence[Addon] = (),
    **overrides: str,
) -> AsyncIterator[GatewayUnderTest]:
    port = free_port()
    config = gateway_config(upstream_url, port, **overrides)
    holder = PolicyHolder([], policy or Policy())
    running = await start_gateway(config, holder, addons)
    try:
        yield GatewayUnderTest(f"http://127.0.0.1:{port}", port, running, config)
    finally:
        await running.stop()


async def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes or goes quiet: for malformed requests."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and timeout > 1:
                timeout = 0.5  # headers arrived; allow a short tail for the body
    except asyncio.TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)
