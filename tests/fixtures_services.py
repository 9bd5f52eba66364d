"""Real Redis and PostgreSQL for the tests, started when absent.

Tests talk to real servers (see DESIGN.md, "Tests"). On a developer machine they are
usually running; on a fresh CI machine the first test that needs one starts Debian's
server. Under pytest-xdist several workers may race to do so, hence a file lock and a
re-check inside it. Servers we start are left running: other workers may still use them.

Overrides: GW_TEST_REDIS_URL and GW_TEST_POSTGRES_URL point at servers elsewhere; those
are never started, only checked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}

T = TypeVar("T")


def worker_id() -> str:
    """The xdist worker name ("gw0", ...) or "main": part of every throwaway name."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unique_name(stem: str) -> str:
    """A name no other worker, run or machine sharing the server will pick."""
    return f"{stem}_{worker_id()}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop
    (a fresh loop in a helper thread), so sync fixtures serve sync and async tests."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def _service_lock(name: str) -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"pms-gateway-test-{name}.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_until(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _start(command: list[str], what: str) -> None:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{what} is not running and {command[0]!r} is not installed "
                    f"(apt-get install {what.lower()}), or set its GW_TEST_* URL", pytrace=False)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"could not start {what}: {' '.join(command)} exited {done.returncode}: "
                    f"{done.stderr.strip() or done.stdout.strip()}", pytrace=False)


# -- Redis ------------------------------------------------------------------------------
def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis that answers; Debian's redis-server is started when needed."""
    override = os.environ.get("GW_TEST_REDIS_URL")
    url = override or DEFAULT_REDIS_URL
    if _redis_answers(url):
        return url
    if override:
        pytest.fail(f"GW_TEST_REDIS_URL={override} does not answer PING", pytrace=False)
    parts = urlsplit(url)
    port = str(parts.port or 6379)
    with _service_lock("redis"):
        if not _redis_answers(url):
            _start(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port,
                    "--save", "", "--appendonly", "no"], "Redis")
            if not _wait_until(lambda: _redis_answers(url), 15):
                pytest.fail(f"started redis-server but {url} does not answer", pytrace=False)
    return url


# -- PostgreSQL -------------------------------------------------------------------------
def _asyncpg_dsn(url: str) -> str:
    """asyncpg wants plain postgresql:// (no SQLAlchemy driver suffix)."""
    scheme, sep, rest = url.partition("://")
    return ("postgresql" if scheme.startswith(("postgresql", "postgres")) else scheme) + sep + rest


async def _pg_query(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _postgres_answers(url: str) -> bool:
    try:
        run_async(_pg_query(url, "SELECT 1"))
        return True
    except Exception:
        return False


def _postgres_clusters() -> list[str]:
    root = Path("/etc/postgresql")
    versions = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return sorted(versions, key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")])


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Admin URL (database "postgres") of a PostgreSQL that answers; Debian's cluster is
    started when needed."""
    override = os.environ.get("GW_TEST_POSTGRES_URL")
    url = override or DEFAULT_POSTGRES_URL
    if _postgres_answers(url):
        return url
    if override:
        pytest.fail(f"GW_TEST_POSTGRES_URL={override} does not accept connections", pytrace=False)
    with _service_lock("postgres"):
        if not _postgres_answers(url):
            versions = _postgres_clusters()
            if not versions:
                pytest.fail("PostgreSQL is not running and no cluster exists in /etc/postgresql "
                            "(apt-get install postgresql), or set GW_TEST_POSTGRES_URL",
                            pytrace=False)
            _start(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   "PostgreSQL")
            if not _wait_until(lambda: _postgres_answers(url), 30):
                pytest.fail(f"started PostgreSQL {versions[-1]} but {url} refuses connections",
                            pytrace=False)
    return url


def create_postgres_database(admin_url: str, stem: str = "gw_test") -> str:
    """Create an empty database; returns its SQLAlchemy asyncpg URL."""
    from sqlalchemy.engine import make_url

    name = unique_name(stem).lower()
    run_async(_pg_query(admin_url, f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, database_url: str) -> None:
    """Drop a database made by create_postgres_database, closing leftover connections."""
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    run_async(_pg_query(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (postgresql+asyncpg:// URL), dropped after."""
    url = create_postgres_database(postgres_url)
    try:
        yield url
    finally:
        drop_postgres_database(postgres_url, url)
