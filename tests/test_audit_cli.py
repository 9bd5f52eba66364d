"""The reading commands: `audit query` filters and formats, `audit export`, `audit tail`,
`audit head`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.audit.entry import AuditEntry
from gateway.cli import app
from tests.test_audit_support import audit_stack

DAY = 86400


def entry(n: int, path: str, *, user: str | None = None, ip: str = "192.0.2.1", decision: str = "allowed",
          age: float = 0.0, identifiers: dict[str, str] | None = None) -> AuditEntry:
    return AuditEntry(request_id=f"q{n}", at=time.time() - age, decision=decision, user=user, client_ip=ip,
                      method="GET", path=path, status=200 if decision == "allowed" else 403,
                      identifiers=identifiers or {}, prepared=True)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    async def make() -> None:
        async with audit_stack(tmp_path) as stack:
            await stack.services.store.append([
                entry(1, "/reservations/123", user="alice", identifiers={"reservation": "123"}, age=3 * DAY),
                entry(2, "/reservations/124", user="bob", ip="198.51.100.2", identifiers={"reservation": "124"}),
                entry(3, "/reservations/123", user="bob", ip="198.51.100.2", identifiers={"reservation": "123"}),
                entry(4, "/admin/users", user="carol", decision="denied"),
                entry(5, "/login", ip="203.0.113.50"),
            ], "gw-test")

    asyncio.run(make())
    return tmp_path


def cli(data_dir: Path, *args: str) -> tuple[int, str]:
    env = {"PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_POLICY_PATHS": "[]"}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def ids(output: str) -> list[str]:
    return [json.loads(line)["request_id"] for line in output.splitlines() if line.startswith("{")]


def test_who_opened_reservation_123(trail: Path) -> None:
    code, output = cli(trail, "audit", "query", "--identifier", "reservation=123", "--format", "jsonl")
    assert code == 0 and ids(output) == ["q1", "q3"]
    assert [json.loads(line)["user"] for line in output.splitlines()] == ["alice", "bob"]


@pytest.mark.parametrize(("args", "expected"), [
    (("--user", "Bob"), ["q2", "q3"]),
    (("--ip", "198.51.100.2"), ["q2", "q3"]),
    (("--path", "/reservations/"), ["q1", "q2", "q3"]),
    (("--path", r"re:^/reservations/12[34]$"), ["q1", "q2", "q3"]),
    (("--path", "re:^/(admin|login)"), ["q4", "q5"]),
    (("--decision", "denied"), ["q4"]),
    (("--since", "1d"), ["q2", "q3", "q4", "q5"]),
    (("--until", "2d"), ["q1"]),
    (("--user", "bob", "--identifier", "reservation=123"), ["q3"]),
    (("--user", "nobody"), []),
    (("--limit", "2"), ["q1", "q2"]),
])
def test_query_filters(trail: Path, args: tuple[str, ...], expected: list[str]) -> None:
    code, output = cli(trail, "audit", "query", "--format", "jsonl", *args)
    assert code == 0, output
    assert ids(output) == expected


def test_table_and_bad_arguments(trail: Path) -> None:
    code, output = cli(trail, "audit", "query", "--user", "alice")
    assert code == 0
    lines = output.splitlines()
    assert lines[0].startswith("AT") and "alice" in lines[1] and "reservation=123" in lines[1]
    assert "(1 records)" in output
    assert cli(trail, "audit", "query", "--identifier", "reservation")[0] == 1
    assert cli(trail, "audit", "query", "--format", "xml")[0] == 1


def test_export_csv_and_jsonl(trail: Path) -> None:
    code, output = cli(trail, "audit", "export", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [r["request_id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5"]
    assert rows[0]["user"] == "alice" and json.loads(rows[0]["identifiers"]) == {"reservation": "123"}
    target = trail / "export.jsonl"
    code, output = cli(trail, "audit", "export", "--output", str(target), "--user", "bob")
    assert code == 0 and "2 records written" in output
    assert ids(target.read_text()) == ["q2", "q3"]


def test_tail_and_head(trail: Path) -> None:
    code, output = cli(trail, "audit", "tail", "-n", "2", "--format", "jsonl")
    assert code == 0 and ids(output) == ["q4", "q5"]
    code, output = cli(trail, "audit", "head")
    head = json.loads(output)
    assert head["instance_id"] == "gw-test" and head["seq"] == 5 and len(head["mac"]) == 64


async def test_tail_follow_prints_new_records(trail: Path) -> None:
    import os
    import sys

    env = {**os.environ, "PMS_GATEWAY_DATA_DIR": str(trail), "PMS_GATEWAY_POLICY_PATHS": "[]"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "audit", "tail", "-f", "-n", "1", "--interval", "0.1", "--format", "jsonl",
        env=env, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        assert json.loads(first)["request_id"] == "q5"
        async with audit_stack(trail) as stack:
            await stack.services.store.append([entry(6, "/reservations/999", user="dave")], "gw-test")
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert (line["request_id"], line["user"]) == ("q6", "dave")
    finally:
        process.terminate()
        await process.wait()
