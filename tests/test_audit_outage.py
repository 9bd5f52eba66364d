"""Nothing answered is ever missing from the trail: PostgreSQL cut mid-load (through a TCP
forwarder the test controls), and a gateway process stopped by SIGTERM mid-load, with the
database away and back. Afterwards every answered request's record is stored once, in the
order each client got its answers, and the chain verifies."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from gateway.audit.keys import key_path, load_keys
from gateway.audit.verify import verify_trail
from gateway.db import audit_records, open_database
from gateway.policy.schema import AuditPolicy, Policy
from tests.harness import run_gateway, serve_app
from tests.test_audit_support import GatewayProcess, TcpCut, audit_stack, gateway_environ, gateway_overrides
from tests.upstream_app import create_upstream

pytestmark = pytest.mark.slow
CLIENTS = 4


@pytest.fixture
async def upstream(tmp_path):
    async with serve_app(create_upstream(tmp_path)) as url:
        yield url


class Load:
    """CLIENTS sequential clients, each asking /load/<client>/<n>; `answered` keeps, per
    client, the paths whose response arrived in full."""

    def __init__(self, base_url: str, prefix: str = "load") -> None:
        self.base_url, self.prefix = base_url, prefix
        self.answered: dict[int, list[str]] = defaultdict(list)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(CLIENTS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def total(self) -> int:
        return sum(map(len, self.answered.values()))

    async def _client(self, client: int) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            n = 0
            while not self._stop.is_set():
                path = f"/{self.prefix}/{client}/{n}"
                try:
                    async with session.get(self.base_url + path,
                                           headers={"X-Forwarded-For": f"198.51.100.{client + 1}"}) as r:
                        await r.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return  # the gateway went away: what was answered counts
                self.answered[client].append(path)
                n += 1
                await asyncio.sleep(0.002)


async def stored_paths(database_url: str) -> list[str]:
    database = await open_database(database_url)
    try:
        async with database.connect() as conn:
            return list((await conn.execute(
                select(audit_records.c.path).where(audit_records.c.channel == "http").order_by(audit_records.c.seq)
            )).scalars())
    finally:
        await database.close()


def assert_complete_once_in_order(stored: list[str], *loads: Load) -> None:
    assert len(stored) == len(set(stored)), "a record was stored twice"
    position = {path: index for index, path in enumerate(stored)}
    for load in loads:
        for client, paths in load.answered.items():
            missing = [p for p in paths if p not in position]
            assert not missing, f"answered but not recorded: {missing[:5]} ({len(missing)})"
            seqs = [position[p] for p in paths]
            assert seqs == sorted(seqs), f"client {client}'s records are out of order"


async def test_postgres_cut_mid_load(upstream, postgres_database_url: str, tmp_path: Path) -> None:
    target = make_url(postgres_database_url)
    policy = Policy(audit=AuditPolicy(flush_interval=0.1, batch_size=50))
    async with TcpCut(target.host or "127.0.0.1", target.port or 5432) as cut:
        async with audit_stack(tmp_path, policy, cut.url_for(postgres_database_url)) as stack:
            writer = stack.services.writer
            async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw:
                load = Load(gw.url)
                load.start()
                await asyncio.sleep(1.0)
                before_cut = load.total
                cut.cut()
                await asyncio.sleep(2.5)
                assert writer.store_failing and writer.spool.pending, "the outage went unnoticed"
                during = load.total - before_cut
                cut.restore()
                for _ in range(100):  # the writer replays on its own
                    await asyncio.sleep(0.1)
                    if not writer.spool.pending:
                        break
                assert not writer.spool.pending, "the spool was not replayed after the database returned"
                await asyncio.sleep(0.5)
                await load.stop()
            assert before_cut > 20 and during > 20, (before_cut, during)  # requests kept flowing
            assert writer.spooled > 0
    stored = await stored_paths(postgres_database_url)
    assert_complete_once_in_order(stored, load)
    assert not list((tmp_path / "audit-spool").glob("*.jsonl"))
    database = await open_database(postgres_database_url)
    try:
        report = await verify_trail(database, load_keys(key_path(tmp_path)))
    finally:
        await database.close()
    assert report.ok, report.findings


async def test_sigterm_mid_load_with_the_database_away_and_back(
    upstream, postgres_database_url: str, tmp_path: Path
) -> None:
    target = make_url(postgres_database_url)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("audit:\n  flush_interval: 0.5s\n  batch_size: 200\n"
                           "login:\n  public_paths: ['^/load/', '^/more/']\n")
    async with TcpCut(target.host or "127.0.0.1", target.port or 5432) as cut:
        environ = gateway_environ(upstream, tmp_path / "data", policy_file, cut.url_for(postgres_database_url))
        gateway = GatewayProcess(environ, tmp_path / "gateway.log")
        # 1. SIGTERM while the database is cut: answered records wait in the spool.
        await gateway.start()
        first = Load(gateway.url)
        first.start()
        await asyncio.sleep(0.8)
        cut.cut()
        await asyncio.sleep(1.2)
        assert await gateway.terminate() == 0
        await first.stop()
        assert first.total > 20
        assert list((tmp_path / "data" / "audit-spool").glob("*.jsonl")), "nothing was spooled"
        # 2. Database back: a new process replays the spool first, then SIGTERM mid-load again.
        cut.restore()
        await gateway.start()
        second = Load(gateway.url, prefix="more")
        second.start()
        await asyncio.sleep(1.2)
        assert await gateway.terminate() == 0
        await second.stop()
        assert second.total > 20
    stored = await stored_paths(postgres_database_url)
    assert_complete_once_in_order(stored, first, second)
    assert max(stored.index(p) for ps in first.answered.values() for p in ps) < min(
        stored.index(p) for ps in second.answered.values() for p in ps), "replayed records came after new ones"
    assert not list((tmp_path / "data" / "audit-spool").glob("*.jsonl"))
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "audit", "verify",
        env={**os.environ, **environ, "PMS_GATEWAY_DATABASE_URL": postgres_database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await verify.communicate())[0].decode()
    assert verify.returncode == 0, output
    assert "OK" in output and "exported head(s) checked" in output
