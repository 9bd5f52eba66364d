"""The egress proxy process: mitmproxy with the redaction addon, and its supervisor.

mitmproxy replaces the event loop's task factory and cannot share a loop, so it always
runs in a child process (`python -m gateway.redact.egress`), never in the gateway's loop.
`EgressSupervisor` (used by `pms-gateway run`) starts that child, restarts it with
backoff when it dies and stops it on shutdown. `export_ca` gives the CA certificate the
PMS must trust in regular (HTTP proxy) mode. mitmproxy is imported only inside the child
(and by `export_ca`), so the gateway process never loads it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path


from gateway.redact.settings import EgressSettings

log = logging.getLogger(__name__)

HASH_KEY_ENV = "EGRESS_REDACT_HASH_KEY"
"""Hex-encoded hash key for the Redactor, handed to the child outside its command line
(not PMS_GATEWAY_*: those are deployment-config overrides)."""

CA_CERT_NAME = "mitmproxy-ca-cert.pem"


def export_ca(confdir: str | Path) -> Path:
    """Path of the interception CA certificate (PEM), creating the CA on first use."""
    from mitmproxy.certs import CertStore

    confdir = Path(confdir).expanduser()
    if not (confdir / "mitmproxy-ca.pem").exists():
        # The same files mitmproxy's CertStore.from_store creates, with a name an
        # operator recognises when installing it on the PMS host.
        CertStore.create_store(confdir, "mitmproxy", 2048, organization="PMS Gateway", cn="PMS Gateway egress CA")
    return confdir / CA_CERT_NAME


def proxy_modes(settings: EgressSettings) -> list[str]:
    """mitmproxy `mode` entries: one regular listener, or one reverse listener per provider."""
    if settings.mode == "regular":
        return [f"regular@{settings.port}"]
    return [f"reverse:{t.upstream}@{t.listen_port}" for t in settings.reverse_targets]


def listen_ports(settings: EgressSettings) -> list[int]:
    if settings.mode == "regular":
        return [settings.port]
    return [t.listen_port for t in settings.reverse_targets]


def mitmproxy_options(settings: EgressSettings) -> dict[str, object]:
    return {
        "mode": proxy_modes(settings),
        "listen_host": settings.listen_host,
        "confdir": str(Path(settings.confdir).expanduser()),
        "ssl_verify_upstream_trusted_ca": settings.upstream_ca_file,
        "body_size_limit": str(settings.max_body_size),  # larger bodies get 413, never unredacted
        # Nothing may carry data past the request hook: no raw TCP tunnels, no WebSocket
        # frames, no QUIC.
        "rawtcp": False,
        "websocket": False,
        "http3": False,
    }


class ClientFilter:
    """mitmproxy addon: close connections from outside `allowed_clients` (no open proxy)."""

    def __init__(self, allowed: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.allowed = list(allowed)

    def client_connected(self, client) -> None:
        try:
            address = ipaddress.ip_address(client.peername[0].split("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            allowed = any(address in net for net in self.allowed)
        except Exception:  # mitmproxy would log an addon error and carry on: fail closed
            log.exception("client filter failed")
            address, allowed = client.peername[0], False
        if not allowed:
            log.warning("egress proxy refused client %s (not in allowed_clients)", address)
            client.error = "client not allowed"


# ---------------------------------------------------------------- the child process


async def serve(
    settings: EgressSettings, policy_paths: Sequence[str], hash_key: bytes = b"", exit_with_parent: bool = False
) -> None:
    """Run mitmproxy until SIGTERM/SIGINT (or stdin EOF with exit_with_parent); SIGHUP
    re-reads the policy files."""
    from mitmproxy import options
    from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
    from mitmproxy.master import Master

    from gateway.redact.egress_addon import RedactionAddon
    from gateway.redact.outbound_audit import LogAudit

    export_ca(settings.confdir)
    master = Master(options.Options())  # only the addons a proxy needs: no scripts, no replay
    redaction = RedactionAddon(audit=LogAudit(), hash_key=hash_key)
    master.addons.add(
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(repeat_errors_on_stderr=True),
        ClientFilter(settings.allowed_clients),
        redaction,
    )
    master.options.update(**mitmproxy_options(settings), redact_policy=list(policy_paths))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, master.shutdown)
    loop.add_signal_handler(signal.SIGINT, master.shutdown)
    loop.add_signal_handler(signal.SIGHUP, redaction.reload)
    if exit_with_parent:
        # The supervisor holds our stdin: EOF means it is gone (even if killed), so we go too.
        def on_stdin() -> None:
            if not os.read(0, 4096):
                loop.remove_reader(0)
                master.shutdown()

        loop.add_reader(0, on_stdin)
    await master.run()
    # Connections still open are cancelled by asyncio.run's teardown; that is not an error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _load_settings(args: argparse.Namespace) -> tuple[EgressSettings, list[str]]:
    """Settings and policy paths: from the supervisor's JSON, or from config.yaml."""
    if args.settings_json:
        if not args.policy:
            raise ValueError("--settings-json needs --policy")
        return EgressSettings.model_validate_json(args.settings_json), args.policy
    from gateway.config import load_config

    config = load_config(args.config)
    return config.egress, args.policy or [str(p) for p in config.policy_paths]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.redact.egress", description="Egress proxy redacting outbound notifications."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="deployment config (YAML); its `egress:` section is used")
    source.add_argument("--settings-json", help="EgressSettings as JSON (how the supervisor passes them)")
    parser.add_argument(
        "--policy", action="append", help="policy file or directory (repeatable); default: the config's policy_paths"
    )
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin reaches EOF")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="egress %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("mitmproxy", "hpack", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from mitmproxy.exceptions import OptionsError

    try:
        settings, policies = _load_settings(args)
        hash_key = bytes.fromhex(os.environ.get(HASH_KEY_ENV, ""))
        asyncio.run(serve(settings, policies, hash_key, args.exit_with_parent))
    except (OptionsError, ValueError, OSError) as exc:  # one readable line for the supervisor's log
        print(f"egress: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------- the supervisor


class EgressSupervisor:
    """Keeps the egress child running: restart with backoff, SIGTERM then kill on stop."""

    def __init__(
        self,
        settings: EgressSettings,
        policy_paths: str | Path | Sequence[str | Path],
        *,
        hash_key: bytes = b"",
        python: str = sys.executable,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        paths = [policy_paths] if isinstance(policy_paths, (str, Path)) else policy_paths
        self.policy_paths = [str(p) for p in paths]
        self.hash_key = hash_key
        self.python = python
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.stop_timeout = stop_timeout
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def command(self) -> list[str]:
        return [
            self.python, "-m", "gateway.redact.egress",
            "--settings-json", self.settings.model_dump_json(),
            *(arg for path in self.policy_paths for arg in ("--policy", path)),
            "--exit-with-parent",
        ]  # fmt: skip

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._supervise(), name="egress-supervisor")

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        env = {**os.environ, HASH_KEY_ENV: self.hash_key.hex()}
        backoff = self.min_backoff
        while not self._stopping.is_set():
            started = loop.time()
            self.process = await asyncio.create_subprocess_exec(*self.command(), stdin=asyncio.subprocess.PIPE, env=env)
            code = await self.process.wait()
            if self._stopping.is_set():
                return
            if loop.time() - started > 60:
                backoff = self.min_backoff  # it ran fine for a while: not a crash loop
            log.error("egress proxy exited with status %s; restarting in %.1fs", code, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.max_backoff)
            self.restarts += 1

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Return once every listener accepts connections; raise if that takes too long."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
        host = wildcard.get(self.settings.listen_host, self.settings.listen_host)
        async with asyncio.timeout(timeout):
            for port in listen_ports(self.settings):
                while True:
                    try:
                        _, writer = await asyncio.open_connection(host, port)
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    break

    def reload(self) -> None:
        """Ask the child to re-read the policy file (it keeps the last good one)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        self._stopping.set()
        while self._task is not None and not self._task.done():
            await self._terminate(self.process)  # the task ends once its child has exited
            await asyncio.wait({self._task}, timeout=0.1)
        self._task = None

    async def _terminate(self, process: asyncio.subprocess.Process | None) -> None:
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("egress proxy ignored SIGTERM; killing it")
            process.kill()
            await process.wait()

if __name__ == "__main__":
    sys.exit(main())
