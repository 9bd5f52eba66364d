"""Item 14: a dependency outage answers a fast 503 page, is audited as `error`, and the
first request after recovery succeeds.

Redis and PostgreSQL are reached through a TCP forwarder the test controls (`TcpCut`):
`cut()` drops every open connection and refuses new ones, as a crashed or restarted
server does. A second forwarder never answers at all (a hung server), which only a
bounded client timeout turns into an answer.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from gateway.audit.query import AuditReader, QueryFilter
from tests.harness import free_port
from tests.login_env import Browser, login_env
from tests.test_audit_support import TcpCut

UNAVAILABLE = "Sign-in service unavailable"


async def _audited(env, path: str, status: int) -> dict:
    """The audit record of the last request to `path` with `status` (waits for the flush)."""
    reader = AuditReader(env.services.database, env.services.audit.keys)
    for _ in range(100):
        found = [r async for r in reader.records(QueryFilter()) if r["path"] == path and r["status"] == status]
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no audit record for {path} with status {status}")


def _redis_cut(redis_url: str) -> TcpCut:
    target = urlsplit(redis_url)
    return TcpCut(target.hostname or "127.0.0.1", target.port or 6379)


async def test_redis_cut_answers_503_audited_as_error_and_recovers(tmp_path, redis_url):
    async with _redis_cut(redis_url) as cut:
        store_url = f"redis://127.0.0.1:{cut.port}/0?prefix=gwtest-outage-{free_port()}:"
        async with login_env(tmp_path, store_url) as env:
            browser = Browser(env)
            try:
                await browser.password("alice")
                await browser.enroll("alice")
                assert (await browser.request("GET", "/reservations"))[0] == 200
                cut.cut()
                status, headers, page = await browser.request("GET", "/reservations")
                assert status == 503 and UNAVAILABLE in page, (status, page[:300])
                assert headers.get("Retry-After")
                status, _, page = await Browser(env).password("bob")
                assert status == 503 and UNAVAILABLE in page
                record = await _audited(env, "/reservations", 503)
                assert record["decision"] == "error" and "session store" in (record["reason"] or "")
                cut.restore()
                status, _, page = await browser.request("GET", "/reservations")
                assert status == 200, page[:300]  # the stale pooled connection was retried
            finally:
                await browser.close()


class HangingCut(TcpCut):
    """`hang()` drops the open connections and then accepts new ones without ever
    answering: a server that is up but stuck."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.hanging = False

    def hang(self) -> None:
        self.hanging = True
        self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hanging:
            self._pipes.add(writer)  # kept open, never answered (aborted at the end)
            return
        await super()._accept(reader, writer)


async def test_hung_redis_is_a_bounded_503_not_a_hang(tmp_path, redis_url):
    target = urlsplit(redis_url)
    async with HangingCut(target.hostname or "127.0.0.1", target.port or 6379) as cut:
        store_url = f"redis://127.0.0.1:{cut.port}/0?prefix=gwtest-hang-{free_port()}:"
        async with login_env(tmp_path, store_url) as env:
            browser = Browser(env)
            try:
                await browser.password("alice")
                await browser.enroll("alice")
                cut.hang()
                # No timing is asserted: without a bounded client timeout these would
                # wait forever (the test's own timeout would end them, as a failure).
                status, _, page = await browser.request("GET", "/reservations")
                assert status == 503 and UNAVAILABLE in page, (status, page[:300])
                status, _, page = await Browser(env).password("bob")
                assert status == 503 and UNAVAILABLE in page, (status, page[:300])
            finally:
                await browser.close()


async def test_postgres_cut_answers_503_audited_as_error_and_recovers(tmp_path, postgres_database_url):
    target = urlsplit(postgres_database_url.replace("+asyncpg", ""))
    async with TcpCut(target.hostname or "127.0.0.1", target.port or 5432) as cut:
        database_url = cut.url_for(postgres_database_url)
        async with login_env(tmp_path, config_overrides={"database_url": database_url}) as env:
            browser = Browser(env)
            try:
                await browser.password("alice")
                await browser.enroll("alice")
                cut.cut()
                status, _, page = await Browser(env).password("bob")
                assert status == 503 and UNAVAILABLE in page, (status, page[:300])
                cut.restore()
                status, headers, _ = await Browser(env).password("bob")
                assert headers.get("Location") == "/_gateway/2fa", (status, headers)
                record = await _audited(env, "/login", 503)
                assert record["decision"] == "error" and "database" in (record["reason"] or "")
            finally:
                await browser.close()
