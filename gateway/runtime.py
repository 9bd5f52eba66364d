"""Starting and stopping the listeners a configuration enables, in one event loop.

`pms-gateway run` and `pms-gateway demo` both come here; tests use `start_gateway` to run
a real gateway on a free port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from gateway.config import Config
from gateway.policy.reload import PolicyHolder
from gateway.proxy.exchange import Addon
from gateway.proxy.lean.server import LeanSite
from gateway.proxy.quiet_errors import GatewayRunner
from gateway.proxy.server import Gateway, server_kwargs, tls_context

log = structlog.get_logger("gateway.runtime")


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: GatewayRunner
    port: int
    cleanups: list = field(default_factory=list)

    async def stop(self) -> None:
        await self.runner.cleanup()
        for cleanup in reversed(self.cleanups):
            await cleanup()


async def start_gateway(
    config: Config,
    policy: PolicyHolder,
    addons: Sequence[Addon] = (),
    *,
    reuse_port: bool = False,
) -> RunningGateway:
    gateway = Gateway(config, policy, addons)
    runner = GatewayRunner(gateway.build_app(), handle_signals=False, **server_kwargs(config))
    await runner.setup()
    site: web.TCPSite
    if config.listen.engine == "lean":
        site = LeanSite(runner, config.listen.host, config.listen.port, limits=config.limits,
                        ssl_context=tls_context(config), reuse_port=reuse_port or None, backlog=1024)
    else:
        site = web.TCPSite(
            runner,
            config.listen.host,
            config.listen.port,
            ssl_context=tls_context(config),
            reuse_port=reuse_port or None,
            backlog=1024,
        )
    try:
        await site.start()
    except BaseException:  # e.g. the port is taken: close the addons' clients before the CLI explains
        await runner.cleanup()
        raise
    port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
    return RunningGateway(gateway=gateway, runner=runner, port=port)


def warn_if_upstream_exposed(config: Config) -> None:
    """The gateway protects nothing if staff can reach the PMS around it."""
    host = urlsplit(config.upstream.url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_global:
            log.warning(
                "the upstream PMS has a public address: firewall it so only the gateway reaches it",
                upstream=config.upstream.url,
                address=address,
            )


async def wait_for_shutdown_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def install_fast_loop() -> None:
    """uvloop when installed: about twice aiohttp's throughput on the same core."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
