"""The stores a benchmark run gives its gateways, as a multi-worker deployment has them.

Sessions live in Redis (127.0.0.1:6379, the run's own key prefix `proxy-bench-<pid>:`,
deleted at the end): that is what `listen.workers > 1` needs. The audit trail and the
accounts live in PostgreSQL, the production path docker-compose.yml documents (and the
one README's "Several hosts" names), in a database of the run's own
(`gw_proxy_bench_<pid>`, dropped at the end). Every gateway of the run shares both and
one key file, like several hosts of one deployment; each has its own `instance_id`, so
its audit chain is its own and the chain heads say how many records it has stored.

`$GW_BENCH_POSTGRES_URL` (a server URL, default postgresql://postgres@127.0.0.1:5432/postgres)
and `$GW_BENCH_REDIS_URL` (default redis://127.0.0.1:6379/0) point elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections import Counter
from pathlib import Path

SERVER_URL = os.environ.get("GW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class StoreError(RuntimeError):
    """Redis or PostgreSQL cannot be used: the run stops with this one line."""


class BenchStores:
    """Create, query and remove the run's Redis prefix, database and key file."""

    def __init__(self, workdir: Path) -> None:
        self.tag = f"proxy_bench_{os.getpid()}"
        self.database = f"gw_{self.tag}"
        self.prefix = f"proxy-bench-{os.getpid()}:"
        self.key_file = workdir / "secret.key"
        self.loop = asyncio.new_event_loop()
        self.conn = None  # an asyncpg connection to the run's database, once created
        self.audit_key = ""
        self.made: list = []  # the cleanup steps of what create() made

    # -- what the gateway config says ------------------------------------------------

    @property
    def store_url(self) -> str:
        return f"{REDIS_URL}?prefix={self.prefix}"

    @property
    def database_url(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(SERVER_URL).set(drivername="postgresql+asyncpg", database=self.database)
        return url.render_as_string(hide_password=False)

    def share_audit_key(self, data_dir: Path) -> None:
        """One audit key for every gateway of the run (it lives in each data dir), as the
        hosts of one deployment share it: their records are sealed and chained alike."""
        from gateway.audit.keys import KEY_FILE_NAME

        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE_NAME
        path.touch(0o600)
        path.write_text(self.audit_key)

    # -- lifecycle -----------------------------------------------------------------------

    def create(self) -> None:
        self.key_file.touch(0o600)
        self.key_file.write_text(f"bench {base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        self.audit_key = secrets.token_bytes(32).hex() + "\n"
        try:
            self.loop.run_until_complete(self._create())
            self.made.append(self._drop)
        except (OSError, asyncio.TimeoutError) as exc:
            raise StoreError(f"PostgreSQL at {SERVER_URL} is not reachable ({exc}); set GW_BENCH_POSTGRES_URL") from None
        try:
            self.loop.run_until_complete(self._redis_ping())
            self.made.append(self._forget_keys)
        except Exception as exc:  # redis-py raises its own ConnectionError family
            raise StoreError(f"Redis at {REDIS_URL} is not reachable ({exc}); set GW_BENCH_REDIS_URL") from None

    async def _create(self) -> None:
        import asyncpg

        admin = await asyncpg.connect(SERVER_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            # template0: nobody connects to it, so a concurrent CREATE DATABASE cannot make this one fail
            await admin.execute(f'CREATE DATABASE "{self.database}" TEMPLATE template0')
        finally:
            await admin.close()

    async def _redis_ping(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL, socket_timeout=3)
        try:
            await client.ping()
        finally:
            await client.aclose()

    def remove(self) -> None:
        """Drop the database and delete the prefix's keys (what create made); errors are
        reported, not raised."""
        for step in self.made:
            try:
                self.loop.run_until_complete(step())
            except Exception as exc:  # cleanup must not hide the run's own outcome
                print(f"cleanup: {step.__name__.strip('_')}: {exc}", flush=True)
        self.loop.close()

    async def _drop(self) -> None:
        import asyncpg

        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        admin = await asyncpg.connect(SERVER_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _forget_keys(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL, socket_timeout=3)
        try:
            keys = [key async for key in client.scan_iter(match=self.prefix + "*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start:start + 500])
        finally:
            await client.aclose()

    # -- the audit trail ---------------------------------------------------------------

    def _query(self, sql: str, *args):
        async def run():
            import asyncpg

            if self.conn is None:
                self.conn = await asyncpg.connect(self.database_url.replace("postgresql+asyncpg://", "postgresql://"),
                                                  timeout=5)
            return await self.conn.fetch(sql, *args)

        return self.loop.run_until_complete(run())

    def stored(self, instance: str) -> int:
        """Audit records stored so far by `instance` and its workers (`<instance>-wN`):
        the sum of their chain heads, which move in the same transaction as the records."""
        rows = self._query(
            "SELECT coalesce(sum(seq), 0) AS n FROM audit_chain_heads WHERE instance_id = $1 OR instance_id LIKE $2",
            instance, instance + "-w%",
        )
        return int(rows[0]["n"])

    def statuses(self, instance: str, before: dict[str, int]) -> Counter:
        """"status decision (reason, when not 200)" of the records `instance` (and its workers) stored past the
        chain positions in `before` (a worker not in it: from its first record)."""
        counts: Counter = Counter()
        for name in self.heads(instance):
            rows = self._query(
                "SELECT status, decision, CASE WHEN status = 200 THEN NULL ELSE reason END AS reason, count(*) AS n "
                "FROM audit_records WHERE instance_id = $1 AND seq > $2 GROUP BY 1, 2, 3", name, before.get(name, 0),
            )
            for row in rows:
                why = f" ({row['reason']})" if row["reason"] else ""
                counts[f"{row['status']} {row['decision']}{why}"] += row["n"]
        return counts

    def heads(self, instance: str) -> dict[str, int]:
        rows = self._query(
            "SELECT instance_id, seq FROM audit_chain_heads WHERE instance_id = $1 OR instance_id LIKE $2",
            instance, instance + "-w%",
        )
        return {row["instance_id"]: int(row["seq"]) for row in rows}
