"""Long-running commands: `run` (every enabled listener) and `demo` (demo PMS + gateway)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import shutil
import socket
import sys
from pathlib import Path

import structlog
import yaml
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


DEMO_CONFIG = "config.yaml"


def write_demo_config(port: int, pms_port: int, admin_port: int, data_dir: Path) -> Path:
    """The demo's settings as a config.yaml in its data dir, written at each start: what
    the demo runs on, what `run -c` would read, and what every command hint passes with -c
    (so a command sees the demo's database and keys, not an empty ./var)."""
    default_policy = Path("policies/default.yaml")
    settings = {
        "public_urls": [f"http://localhost:{port}", f"http://127.0.0.1:{port}"],  # security keys need a name
        "listen": {"host": "127.0.0.1", "port": port},
        "upstream": {"url": f"http://127.0.0.1:{pms_port}"},
        "data_dir": str(data_dir.resolve()),
        "policy_paths": [str(default_policy.resolve())] if default_policy.exists() else [],
        "admin": {"enabled": True, "host": "127.0.0.1", "port": admin_port},
    }
    path = data_dir / DEMO_CONFIG
    path.write_text("# Written by `pms-gateway demo` at each start: the demo's settings (pms-gateway config example\n"
                    "# shows every option). Pass it to any command: pms-gateway ... -c " + str(path) + "\n"
                    + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


def cli_program() -> str:
    """How to call this command line from the current folder: `pms-gateway` when the shell
    finds this very program, else its path in the virtualenv (`.venv/bin/pms-gateway`)."""
    program = Path(sys.prefix) / "bin" / "pms-gateway"
    found = shutil.which("pms-gateway")
    if found is not None and Path(found).resolve() == program.resolve():
        return "pms-gateway"
    local = Path(".venv/bin/pms-gateway")  # make's virtualenv, seen from the checkout
    if local.exists() and local.resolve() == program.resolve():
        return str(local)
    try:
        return str(program.relative_to(Path.cwd()))
    except ValueError:
        return str(program)


async def print_demo_accounts(services: Services, port: int, config_path: Path) -> None:
    """The URL, the staff accounts (for users without a second factor an invite code), how
    to run the command line against the demo, and where the admin listener is."""
    from gateway.demo import DEMO_USERS

    print(f"\n  Demo PMS behind the gateway: http://localhost:{port}/")
    print("  (use localhost, not 127.0.0.1: security keys need a host name)\n")
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
    program, config = cli_program(), f"-c {config_path}"
    print("\n  Scan the QR code with any authenticator app (or enter the key shown).")
    print(f"\n  The command line, from this folder in another terminal: {program} --help")
    if program != "pms-gateway":
        print(f"  (or run `source {Path(program).parent}/activate` once, then `pms-gateway ...`).")
    print(f"  The demo's settings are in {config_path}; every command takes them with {config}:")
    print(f"    New code for a user:    {program} users invite NAME {config}")
    print(f"    Vendor support access:  {program} support grant support --operator it-admin --for 2h {config}")
    print(f"    Follow the audit trail: {program} audit tail -f {config}")
    admin = services.config.admin
    print(f"\n  Admin listener (operator console, /metrics, /health): http://{admin.host}:{admin.port}/")
    print("  Stop with Ctrl+C.\n", flush=True)


def serve_demo(port: int, pms_port: int, data_dir: Path, admin_port: int = 9090) -> None:
    from gateway.demo import DemoSettings, create_app

    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_demo_config(port, pms_port, admin_port, data_dir)
    config = load_config(config_path, environ={})
    configure_logging("console", "info")
    install_fast_loop()

    async def main() -> None:
        pms = web.AppRunner(create_app(DemoSettings(public_url=f"http://localhost:{port}")), access_log=None)
        await pms.setup()
        await web.TCPSite(pms, "127.0.0.1", pms_port).start()
        try:
            await run_gateway(config, lambda services: print_demo_accounts(services, port, config_path))
        finally:
            await pms.cleanup()

    asyncio.run(main())
