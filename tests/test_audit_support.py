"""Shared pieces of the audit tests (no tests here): a TCP forwarder the test can cut, an
audit stack on a temporary data directory, and a tiny addon that plays "signed-in user"."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from gateway.audit.services import AuditServices, build_audit
from gateway.config import Config, load_config
from gateway.db import Database, audit_records, open_database
from gateway.policy.reload import PolicyHolder
from gateway.policy.schema import Policy
from gateway.proxy.exchange import Addon, Exchange
from tests.harness import free_port


class TcpCut:
    """A loopback TCP forwarder in front of a real server. `cut()` drops every open
    connection and refuses new ones (accept, then close) until `restore()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.open = True
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpCut:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._drop()
        await self._server.wait_closed()

    def url_for(self, database_url: str) -> str:
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def cut(self) -> None:
        self.open = False
        self._drop()

    def restore(self) -> None:
        self.open = True

    def _drop(self) -> None:
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pipes |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.open:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._pipes.discard(writer)
            writer.transport.abort()


class PretendUser(Addon):
    """Sets the exchange's user, session and device from test headers, the way the
    session guard would for a signed-in browser."""

    async def request(self, ex: Exchange) -> None:
        headers = ex.request.headers
        ex.user = headers.get("X-Test-User")
        ex.session_hash = headers.get("X-Test-Session")
        ex.device_id = headers.get("X-Test-Device")
        return None


def audit_config(data_dir: Path, database_url: str | None = None, **environ: str) -> Config:
    values = {"PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_POLICY_PATHS": "[]",
              "PMS_GATEWAY_INSTANCE_ID": "gw-test"}
    if database_url is not None:
        values["PMS_GATEWAY_DATABASE_URL"] = database_url
    values.update(environ)
    return load_config(None, environ=values)


@dataclass
class AuditStack:
    config: Config
    policy: PolicyHolder
    database: Database
    services: AuditServices


@contextlib.asynccontextmanager
async def audit_stack(data_dir: Path, policy: Policy | None = None, database_url: str | None = None,
                      **environ: str) -> AsyncIterator[AuditStack]:
    config = audit_config(data_dir, database_url, **environ)
    holder = PolicyHolder([], policy or Policy())
    database = await open_database(config.resolved_database_url)
    services = await build_audit(config, holder, database)
    try:
        yield AuditStack(config, holder, database, services)
    finally:
        await services.close()
        await database.close()


async def count_records(database: Database) -> int:
    async with database.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(audit_records))).scalar_one())


def gateway_overrides(stack: AuditStack) -> dict[str, str]:
    """run_gateway overrides matching the stack's config (same data dir and instance)."""
    return {"data_dir": str(stack.config.data_dir), "instance_id": "gw-test",
            "trusted_proxies": "[127.0.0.1/32]"}


class GatewayProcess:
    """`pms-gateway run` in a subprocess, configured by environment variables."""

    def __init__(self, environ: dict[str, str], stderr: Path) -> None:
        self.environ, self.stderr_path = environ, stderr
        self.port = int(environ["PMS_GATEWAY_LISTEN__PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        handle = open(self.stderr_path, "ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", env={**os.environ, **self.environ},
            stdout=handle, stderr=handle, cwd=Path(__file__).parent.parent,
        )
        handle.close()
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(self.url + "/_gateway/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.process.returncode is not None:
                    raise AssertionError(self.stderr_path.read_text()[-3000:])
                await asyncio.sleep(0.05)
        raise AssertionError("gateway did not start: " + self.stderr_path.read_text()[-3000:])

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)


def gateway_environ(upstream: str, data_dir: Path, policy_file: Path, database_url: str | None = None,
                    **extra: str) -> dict[str, str]:
    """Environment for `pms-gateway run` on a free port (config by PMS_GATEWAY_* only)."""
    port = free_port()
    environ = {
        "PMS_GATEWAY_PUBLIC_URLS": f"[http://127.0.0.1:{port}]",
        "PMS_GATEWAY_LISTEN__PORT": str(port),
        "PMS_GATEWAY_UPSTREAM__URL": upstream,
        "PMS_GATEWAY_DATA_DIR": str(data_dir),
        "PMS_GATEWAY_POLICY_PATHS": f"[{policy_file}]",
        "PMS_GATEWAY_INSTANCE_ID": "gw-proc",
        "PMS_GATEWAY_TRUSTED_PROXIES": "[127.0.0.1/32]",
        "PMS_GATEWAY_ADMIN__ENABLED": "false",
        "PMS_GATEWAY_LOG__FORMAT": "json",
    }
    if database_url is not None:
        environ["PMS_GATEWAY_DATABASE_URL"] = database_url
    environ.update(extra)
    return environ
