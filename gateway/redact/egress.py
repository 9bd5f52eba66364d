"""The egress proxy process: mitmproxy with the redaction addon, and its supervisor.

mitmproxy replaces the event loop's task factory and cannot share a loop, so it always
runs in a child process (`python -m gateway.redact.egress`), never in the gateway's loop.
`EgressSupervisor` (used by `pms-gateway run`) starts that child, restarts it with
backoff when it dies and stops it on shutdown. `export_ca` gives the CA certificate the
PMS must trust in regular (HTTP proxy) mode. mitmproxy is imported only inside the child
(and by `export_ca`), so the gateway process never loads it.

The child records every message it handles in the durable audit trail, as a chain of its
own (`<instance id>-egress`): same database, same audit key and spool directory as the
gateway (see `AuditTarget`). Without one it only logs the records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.redact.settings import EgressSettings

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.policy.reload import PolicyHolder
    from gateway.redact.outbound_audit import OutboundAudit, OutboundRecord

log = logging.getLogger(__name__)

HASH_KEY_ENV = "EGRESS_REDACT_HASH_KEY"
"""Hex-encoded hash key for the Redactor, handed to the child outside its command line
(not PMS_GATEWAY_*: those are deployment-config overrides)."""

AUDIT_ENV = "EGRESS_AUDIT"
"""JSON `AuditTarget` for the child, in the environment too: a database URL may hold a
password, and a command line is visible to every user of the host."""

EGRESS_SUFFIX = "-egress"
DATABASE_OPEN_TIMEOUT = 10.0

CA_CERT_NAME = "mitmproxy-ca-cert.pem"


@dataclass(frozen=True, slots=True)
class AuditTarget:
    """Where the egress child records: the gateway's database and data_dir (audit key,
    spool, exported heads) and the name of the child's own chain."""

    database_url: str
    data_dir: str
    instance_id: str

    @classmethod
    def of(cls, config: Config) -> AuditTarget:
        from gateway.audit.services import instance_id_of

        return cls(
            config.resolved_database_url, str(config.data_dir.expanduser().absolute()),
            instance_id_of(config) + EGRESS_SUFFIX,
        )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AuditTarget:
        data = json.loads(text)
        return cls(str(data["database_url"]), str(data["data_dir"]), str(data["instance_id"]))


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


class _TrailSink:
    """Records into the audit writer (which spools while the database is away); while it
    is away, each record is logged as well, so the operator sees traffic go on."""

    def __init__(self, trail: OutboundAudit, failing) -> None:
        from gateway.redact.outbound_audit import LogAudit

        self.trail, self.failing, self.log = trail, failing, LogAudit()

    async def __call__(self, record: OutboundRecord) -> None:
        await self.trail(record)
        if self.failing():
            await self.log(record)


class EgressAuditTrail:
    """The child's chain in the durable audit trail: writer, spool and head export, as the
    gateway builds them (`gateway.audit.services.build_audit`), for outbound records only."""

    def __init__(self, target: AuditTarget, policy: PolicyHolder) -> None:
        self.target = target
        self.policy = policy
        self.sink: OutboundAudit | None = None
        self._database = self._writer = self._exporter = None

    async def start(self) -> None:
        from gateway.audit.prepare import EntryPreparer
        from gateway.audit.heads import HeadExporter, heads_path
        from gateway.audit.keys import key_path, load_keys
        from gateway.audit.outbound import OutboundAuditSink
        from gateway.audit.spool import Spool, spool_dir
        from gateway.audit.store import AuditStore
        from gateway.audit.writer import AuditWriter, settings_from_policy
        from gateway.db import Database, create_engine, open_database

        data_dir, instance, policy = Path(self.target.data_dir), self.target.instance_id, self.policy
        keys = load_keys(key_path(data_dir))  # the gateway's key: never create a second one here
        unreachable = False
        try:
            async with asyncio.timeout(DATABASE_OPEN_TIMEOUT):
                database = await open_database(self.target.database_url)
        except Exception as exc:
            # Records go to the spool; the writer replays it once the database answers.
            log.error("audit database unreachable (%s: %s); spooling egress records in %s",
                      type(exc).__name__, exc, spool_dir(data_dir))
            database = Database(create_engine(self.target.database_url), 0, ())
            unreachable = True
        self._database = database
        writer = AuditWriter(
            AuditStore(database, keys), Spool(spool_dir(data_dir), instance), instance,
            EntryPreparer(policy, None), settings_from_policy(policy),
        )  # fmt: skip
        exporter = HeadExporter(
            database, instance, heads_path(data_dir), lambda: policy().audit.head_export_interval
        )
        await writer.start()
        self._writer = writer
        await exporter.start()
        self._exporter = exporter
        self.sink = _TrailSink(
            OutboundAuditSink(writer),
            lambda: writer.store_failing or writer.stuck or (unreachable and not writer.written),
        )
        log.info("egress records go to the audit trail as chain %s", instance)

    async def close(self) -> None:
        """Drain the queue (to the database, else the spool), export the final head."""
        try:
            if self._writer is not None:
                await self._writer.close()
            if self._exporter is not None:
                await self._exporter.close()
        finally:
            if self._database is not None:
                await self._database.close()
            self._database = self._writer = self._exporter = None


async def serve(
    settings: EgressSettings,
    policy_paths: Sequence[str],
    hash_key: bytes = b"",
    exit_with_parent: bool = False,
    audit: AuditTarget | None = None,
) -> None:
    """Run mitmproxy until SIGTERM/SIGINT (or stdin EOF with exit_with_parent); SIGHUP
    re-reads the policy files. With `audit`, every record goes to the audit trail, and the
    writer is drained before returning."""
    from mitmproxy import options
    from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
    from mitmproxy.master import Master

    from gateway.policy.reload import PolicyHolder
    from gateway.redact.egress_addon import RedactionAddon
    from gateway.redact.outbound_audit import LogAudit

    export_ca(settings.confdir)
    trail: EgressAuditTrail | None = None
    policy: PolicyHolder | None = None
    if audit is not None:
        policy = PolicyHolder([Path(p) for p in policy_paths])  # the audit: section (batching, heads)
        trail = EgressAuditTrail(audit, policy)
        await trail.start()
    try:
        master = Master(options.Options())  # only the addons a proxy needs: no scripts, no replay
        redaction = RedactionAddon(audit=trail.sink if trail else LogAudit(), hash_key=hash_key)
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

        def reload() -> None:
            redaction.reload()
            if policy is not None:
                policy.reload()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, master.shutdown)
        loop.add_signal_handler(signal.SIGINT, master.shutdown)
        loop.add_signal_handler(signal.SIGHUP, reload)
        if exit_with_parent:
            # The supervisor holds our stdin: EOF means it is gone (even if killed), so we go too.
            def on_stdin() -> None:
                if not os.read(0, 4096):
                    loop.remove_reader(0)
                    master.shutdown()

            loop.add_reader(0, on_stdin)
        await master.run()
    finally:
        if trail is not None:
            await trail.close()  # what the last requests recorded reaches the trail (or spool)
    # Connections still open are cancelled by asyncio.run's teardown; that is not an error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _load_settings(args: argparse.Namespace) -> tuple[EgressSettings, list[str], AuditTarget | None]:
    """Settings, policy paths and audit target: from the supervisor (JSON argument and
    environment), or from config.yaml."""
    target = AuditTarget.from_json(os.environ[AUDIT_ENV]) if os.environ.get(AUDIT_ENV) else None
    if args.settings_json:
        if not args.policy:
            raise ValueError("--settings-json needs --policy")
        return EgressSettings.model_validate_json(args.settings_json), args.policy, target
    from gateway.config import load_config

    config = load_config(args.config)
    return config.egress, args.policy or [str(p) for p in config.policy_paths], target or AuditTarget.of(config)


def _configure_structlog() -> None:
    """The audit modules log through structlog: send those lines to stderr's handler too."""
    import structlog

    from gateway.logs import scrub_secrets

    structlog.configure(
        processors=[scrub_secrets, structlog.processors.format_exc_info,
                    structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.redact.egress", description="Egress proxy redacting outbound notifications."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="deployment config (YAML); its `egress:` section and audit trail are used")
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
    _configure_structlog()
    from mitmproxy.exceptions import OptionsError

    from gateway.audit.keys import AuditKeyError

    try:
        settings, policies, audit = _load_settings(args)
        hash_key = bytes.fromhex(os.environ.get(HASH_KEY_ENV, ""))
        asyncio.run(serve(settings, policies, hash_key, args.exit_with_parent, audit))
    except (OptionsError, ValueError, OSError, AuditKeyError) as exc:  # one readable line for the supervisor's log
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
        audit: AuditTarget | None = None,
        python: str = sys.executable,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stop_timeout: float = 20.0,
    ) -> None:
        """`audit`: where the child records (none: it only logs its records).
        `stop_timeout` leaves the child time to drain its audit writer (a hung database
        counts as failed after 15 s, and the records then go to the spool)."""
        self.settings = settings
        paths = [policy_paths] if isinstance(policy_paths, (str, Path)) else policy_paths
        self.policy_paths = [str(p) for p in paths]
        self.hash_key = hash_key
        self.audit = audit
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
        env.pop(AUDIT_ENV, None)
        if self.audit is not None:
            env[AUDIT_ENV] = self.audit.to_json()
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
