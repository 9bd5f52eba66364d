"""One record per request through a real gateway: fields, identifiers, scrubbing,
encryption at rest, queries, and the refusal modes of a full queue or absent database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import yarl
import pytest
from aiohttp import web
from sqlalchemy import select

from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.verify import verify_trail
from gateway.db import audit_records
from gateway.policy.schema import AuditPolicy, Policy
from gateway.proxy.exchange import Addon, Exchange
from gateway.sessions.model import device_label
from tests.harness import run_gateway, serve_app
from tests.test_audit_support import PretendUser, audit_stack, count_records, gateway_overrides
from tests.upstream_app import create_upstream


@pytest.fixture
async def upstream(tmp_path):
    async with serve_app(create_upstream(tmp_path)) as url:
        yield url


async def test_each_request_recorded_with_its_facts(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(flush_interval=0.05))
    async with audit_stack(tmp_path, policy) as stack:
        async with run_gateway(upstream, policy, addons=[PretendUser(), stack.services.addon],
                               **gateway_overrides(stack)) as gw, aiohttp.ClientSession() as client:
            headers = {"X-Forwarded-For": "81.2.69.160", "X-Test-User": "alice", "X-Test-Session": "s-hash",
                       "X-Test-Device": "dev-1"}
            async with client.get(gw.url + "/reservations/123?view=full&token=abc", headers=headers) as r:
                assert r.status == 200
            async with client.post(gw.url + "/guests/9", data=b"x" * 100,
                                   headers={"X-Forwarded-For": "89.160.20.112"}) as r:
                assert r.status == 200
        # the gateway stopped: the writer drained
        rows = await _rows(stack)
        assert len(rows) == 2
        first, second = rows
        assert (first.seq, second.seq) == (1, 2) and first.instance_id == "gw-test"
        assert first.method == "GET" and first.path == "/reservations/123" and first.status == 200
        assert first.query == "view&token"  # values dropped by default
        assert first.session_hash == "s-hash" and first.device_id == device_label("dev-1") != "dev-1" and first.decision == "allowed"
        assert first.bytes_out > 0 and first.duration_ms > 0 and first.upstream_ms is not None
        assert first.country is None and first.city is None  # no GeoIP configured here
        # personal fields are ciphertext at rest
        assert first.user_name.startswith("v1.") and first.client_ip.startswith("v1.")
        assert "alice" not in first.user_name and "81.2.69.160" not in first.client_ip
        assert second.user_name is None and second.bytes_in == 100
        reader = AuditReader(stack.database, stack.services.keys)
        records = [r async for r in reader.records()]
        assert records[0]["user"] == "alice" and records[0]["client_ip"] == "81.2.69.160"
        assert records[0]["identifiers"] == {"reservation": "123"}
        who = [r async for r in reader.records(QueryFilter(identifier=("reservation", "123")))]
        assert [r["user"] for r in who] == ["alice"]
        assert [r["path"] async for r in reader.records(QueryFilter(ip="89.160.20.112"))] == ["/guests/9"]
        assert [r["path"] async for r in reader.records(QueryFilter(user="alice"))] == ["/reservations/123"]
        assert [r async for r in reader.records(QueryFilter(user="bob"))] == []
        report = await verify_trail(stack.database, stack.services.keys)
        assert report.ok, report.findings


async def test_geoip_fields_and_kept_query_values(upstream, tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "geoip"
    policy = Policy(audit=AuditPolicy(flush_interval=0.05, query_values="keep"))
    async with audit_stack(tmp_path, policy, PMS_GATEWAY_GEOIP__CITY=str(data / "GeoIP2-City-Test.mmdb"),
                           PMS_GATEWAY_GEOIP__ASN=str(data / "GeoLite2-ASN-Test.mmdb")) as stack:
        async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw, \
                aiohttp.ClientSession() as client:
            async with client.get(gw.url + "/search?q=smith&password=hunter2&otp_code=123456",
                                  headers={"X-Forwarded-For": "89.160.20.112"}) as r:
                assert r.status == 200
        (row,) = await _rows(stack)
        assert (row.country, row.city, row.asn) == ("SE", "Linköping", 29518)
        assert row.query == "q=smith&password=[redacted]&otp_code=[redacted]"


async def test_queue_full_refuse_answers_503_and_keeps_every_record(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(on_queue_full="refuse", queue_size=10, flush_interval=30, batch_size=1000))
    async with audit_stack(tmp_path, policy) as stack:
        async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw, \
                aiohttp.ClientSession() as client:
            statuses = []
            for index in range(15):
                async with client.get(f"{gw.url}/item/{index}") as r:
                    statuses.append(r.status)
            assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {503}
            assert stack.services.writer.queued == 15  # refused requests are recorded too
        rows = await _rows(stack)
        assert [r.path for r in rows] == [f"/item/{i}" for i in range(15)]
        assert [r.decision for r in rows[10:]] == ["refused"] * 5


async def test_queue_full_wait_holds_requests_until_space(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(on_queue_full="wait", queue_size=10, flush_interval=0.3, batch_size=5))
    async with audit_stack(tmp_path, policy) as stack:
        async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw, \
                aiohttp.ClientSession() as client:

            async def fetch(index: int) -> int:
                async with client.get(f"{gw.url}/item/{index}") as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(fetch(i) for i in range(40)))
            assert set(statuses) == {200}
        assert await count_records(stack.database) == 40


async def test_store_failure_refuse_mode_answers_503_until_the_database_returns(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(on_store_failure="refuse", flush_interval=0.05))
    async with audit_stack(tmp_path, policy) as stack:
        writer = stack.services.writer
        async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw, \
                aiohttp.ClientSession() as client:
            writer.store_failing = True  # as after a failed write
            async with client.get(gw.url + "/during") as r:
                assert r.status == 503 and r.headers["Retry-After"]
            writer.store_failing = False
            async with client.get(gw.url + "/after") as r:
                assert r.status == 200
        rows = await _rows(stack)
        assert [(r.path, r.status, r.decision) for r in rows] == [
            ("/during", 503, "refused"), ("/after", 200, "allowed")]


async def _rows(stack) -> list:
    async with stack.database.connect() as conn:
        return (await conn.execute(select(audit_records).order_by(audit_records.c.seq))).all()


class Forbid(Addon):
    """A guard answering 403 itself for /forbidden (the gateway's own answer)."""

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        if ex.path.path == "/forbidden":
            ex.deny("denied", "test rule")
            return web.Response(status=403, text="no")
        return None


async def test_strict_durability_stores_before_answering(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(durability="strict", flush_interval=60, batch_size=1000))
    async with audit_stack(tmp_path, policy) as stack:
        async with run_gateway(upstream, policy, addons=[Forbid(), stack.services.addon],
                               **gateway_overrides(stack)) as gw, aiohttp.ClientSession() as client:
            for path, status in (("/reservations/5", 200), ("/forbidden", 403), ("/chunked", 200)):
                async with client.get(gw.url + path) as r:
                    assert r.status == status
                    await r.read()
                # stored before the answer arrived: nothing waits for the 60 s flush
                assert (await _rows(stack))[-1].path == path
            statuses = await asyncio.gather(*(_status(client, f"{gw.url}/item/{i}") for i in range(30)))
            assert set(statuses) == {200}
            assert await count_records(stack.database) == 33
        rows = await _rows(stack)
        assert rows[0].bytes_out > 0 and rows[1].decision == "denied"
        assert json.loads(rows[2].extra) == {"bytes_out": "streamed"}


async def _status(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        await response.read()
        return response.status


async def test_gateway_pages_and_early_refusals_are_recorded(upstream, tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(flush_interval=0.05))
    async with audit_stack(tmp_path, policy) as stack:
        async with run_gateway(upstream, policy, addons=[stack.services.addon], **gateway_overrides(stack)) as gw, \
                aiohttp.ClientSession() as client:
            for path in ("/_gateway/health", "/_gateway/static/gateway.css", "/_gateway/nothing",
                         "/a%2Fb", "/reservations/8"):
                async with client.get(yarl.URL(gw.url + path, encoded=True),
                                      headers={"X-Forwarded-For": "203.0.113.9"}) as r:
                    await r.read()
            async with client.get(gw.url + "/host-poisoning", headers={"Host": "evil.example"}) as r:
                assert r.status == 421
        rows = await _rows(stack)
        assert [(r.path, r.status, r.decision) for r in rows] == [
            ("/_gateway/nothing", 404, "refused"), ("/a/b", 400, "refused"), ("/reservations/8", 200, "allowed"),
            ("/host-poisoning", 421, "refused")]
        assert all(r.client_ip.startswith("v1.") for r in rows)
