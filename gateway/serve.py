"""Long-running commands: `run` (every enabled listener) and `demo` (demo PMS + gateway)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import socket
from pathlib import Path

import structlog
from aiohttp import web

from collections.abc import Awaitable, Callable

from gateway.admin.listener import start_admin
from gateway.admin.metrics import Metrics
from gateway.assembly import Services, build_addons, open_services
from gateway.config import Config, load_config
from gateway.logs import configure_logging
from gateway.policy.reload import PolicyHolder
from gateway.redact.hold_queue import HoldQueue, hold_dir
from gateway.redact.listeners import start_outbound
from gateway.runtime import install_fast_loop, start_gateway, wait_for_shutdown_signal, warn_if_upstream_exposed

log = structlog.get_logger("gateway.serve")


async def run_gateway(
    config: Config,
    on_ready: Callable[[Services], Awaitable[None]] | None = None,
    *,
    primary: bool = True,
) -> None:
    """One gateway process. Only the primary runs the outbound and admin listeners."""
    policy = PolicyHolder(config.policy_paths)
    if primary:
        warn_if_upstream_exposed(config)
    services = await open_services(config, policy)
    addons, cleanups = await build_addons(config, policy, services)
    try:
        running = await start_gateway(config, policy, addons, reuse_port=config.listen.workers > 1)
    except BaseException:  # e.g. the port is taken: close what is open, the CLI says why
        for cleanup in reversed(cleanups):
            await cleanup()
        raise
    running.cleanups.extend(cleanups)
    outbound_stops: list = []
    try:
        if primary:
            audit = services.audit
            outbound_stops = (
                await start_outbound(
                    config,
                    policy,
                    services.keyring.derive("redaction-pseudonyms"),
                    audit=audit.outbound if audit else None,
                    on_blocked=audit.alerter.blocked_notification if audit else None,
                    hold=HoldQueue(hold_dir(config.data_dir), services.keyring),
                    on_held=audit.alerter.mail_held if audit else None,
                    cipher=services.keyring,
                    on_delayed=audit.alerter.mail_delayed if audit else None,
                    on_failed=audit.alerter.mail_failed if audit else None,
                )
            )
            if config.admin.enabled:
                metrics = next(a for a in addons if isinstance(a, Metrics))
                if config.smtp_relay.enabled:
                    from gateway.redact.mail_queue import MailQueue, queue_dir

                    metrics.watch_mail_queue(MailQueue(queue_dir(config.data_dir), services.keyring))
                admin = await start_admin(config.admin.host, config.admin.port, services, metrics)
                running.cleanups.append(admin.cleanup)
    except BaseException:  # a taken admin or relay port: stop what already listens, the CLI says why
        for stop in reversed(outbound_stops):
            await stop()
        await running.stop()
        raise
    policy.start_watching()
    settle_garbage_collector()
    log.info("gateway listening", url=config.public_urls[0], port=running.port, upstream=config.upstream.url)
    if on_ready is not None:
        await on_ready(services)
    try:
        await wait_for_shutdown_signal()
    finally:
        log.info("shutting down")
        await policy.stop()
        # Outbound listeners first: a message still in the relay must reach the audit
        # writer before the writer drains and closes with the proxy's addons.
        for stop in reversed(outbound_stops):
            await stop()
        await running.stop()


def settle_garbage_collector() -> None:
    """Long-lived objects built at start (policy, schemas, templates, pools) are moved out
    of the collector's sight, and young collections run less often: full collections over
    them were the longest pauses on the request path."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def serve(config: Config) -> None:
    configure_logging(config.log.format, config.log.level)
    workers = config.listen.workers
    if workers > 1 and config.store_url.startswith("memory"):
        raise SystemExit(
            "listen.workers > 1 needs a store all workers share: set store_url to redis://HOST:6379/0"
        )
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker, args=(config, index), daemon=True) for index in range(1, workers)]
    for child in children:
        child.start()
    install_fast_loop()
    try:
        asyncio.run(run_gateway(config))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(10)


def _worker(config: Config, index: int) -> None:
    """A further process on the same port (SO_REUSEPORT): inbound proxy only."""
    configure_logging(config.log.format, config.log.level)
    install_fast_loop()
    base = config.instance_id or socket.gethostname()
    worker_config = config.model_copy(update={"instance_id": f"{base}-w{index}"})
    asyncio.run(run_gateway(worker_config, primary=False))


def demo_config(port: int, pms_port: int, data_dir: Path) -> Config:
    default_policy = Path("policies/default.yaml")
    policy_paths = [default_policy] if default_policy.exists() else []
    return load_config(
        None,
        environ={
            "PMS_GATEWAY_PUBLIC_URLS": f"[http://127.0.0.1:{port}, http://localhost:{port}]",
            "PMS_GATEWAY_LISTEN__PORT": str(port),
            "PMS_GATEWAY_UPSTREAM__URL": f"http://127.0.0.1:{pms_port}",
            "PMS_GATEWAY_DATA_DIR": str(data_dir),
            "PMS_GATEWAY_POLICY_PATHS": "[" + ", ".join(map(str, policy_paths)) + "]",
            "PMS_GATEWAY_ADMIN__ENABLED": "false",
        },
    )


async def print_demo_accounts(services: Services, port: int, data_dir: Path) -> None:
    """The URL, the staff accounts and, for users without a second factor, an invite code."""
    from gateway.demo import DEMO_USERS

    print(f"\n  Demo PMS behind the gateway: http://127.0.0.1:{port}/\n")
    print("  Staff accounts (user / password / one-time enrollment code for the 2FA step):")
    support_accounts = services.policy().support.accounts
    for name, password, role in DEMO_USERS:
        if name in support_accounts:
            invite = "access code from IT (below)"
        elif await services.users.has_second_factor(name):
            invite = "already enrolled"
        else:
            invite = await services.users.create_invite(name)
        print(f"    {name:<8} / {password:<16} / {invite}   ({role})")
    prefix = f"PMS_GATEWAY_DATA_DIR={data_dir} pms-gateway"
    print("\n  Scan the QR code with any authenticator app (or enter the key shown).")
    print(f"  New code for a user: {prefix} users invite NAME")
    print(f"  Vendor support access: {prefix} support grant support --operator it-admin --for 2h")
    print("  Stop with Ctrl+C.\n", flush=True)


def serve_demo(port: int, pms_port: int, data_dir: Path) -> None:
    from gateway.demo import DemoSettings, create_app

    data_dir.mkdir(parents=True, exist_ok=True)
    config = demo_config(port, pms_port, data_dir)
    configure_logging("console", "info")
    install_fast_loop()

    async def main() -> None:
        pms = web.AppRunner(create_app(DemoSettings(public_url=f"http://127.0.0.1:{port}")), access_log=None)
        await pms.setup()
        await web.TCPSite(pms, "127.0.0.1", pms_port).start()
        try:
            await run_gateway(config, lambda services: print_demo_accounts(services, port, data_dir))
        finally:
            await pms.cleanup()

    asyncio.run(main())
