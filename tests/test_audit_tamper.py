"""`pms-gateway audit verify` against a trail someone edited: each kind of tampering is
detected and the first damaged record is named, and the command exits non-zero."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from typer.testing import CliRunner

from gateway.audit.chain import record_mac
from gateway.audit.entry import AuditEntry
from gateway.audit.heads import HeadExporter, heads_path
from gateway.audit.keys import key_path, load_or_create_keys
from gateway.audit.store import AuditStore
from gateway.cli import app
from gateway.db import audit_anchors, audit_chain_heads, audit_records, open_database

RECORDS = 30


def make_trail(data_dir: Path, database_url: str) -> None:
    """RECORDS records on instance gw-t (written in three batches), head exported."""

    async def main() -> None:
        database = await open_database(database_url)
        try:
            store = AuditStore(database, load_or_create_keys(key_path(data_dir)))
            for batch in range(3):
                await store.append([
                    AuditEntry(request_id=f"req-{batch}-{i}", at=time.time(), decision="allowed",
                               user="alice" if i % 2 else None, client_ip=f"203.0.113.{i}", method="GET",
                               path=f"/reservations/{batch * 10 + i}", status=200, identifiers={"reservation": str(i)},
                               prepared=True)
                    for i in range(RECORDS // 3)
                ], "gw-t")
            await HeadExporter(database, "gw-t", heads_path(data_dir), lambda: 60).export()
        finally:
            await database.close()

    asyncio.run(main())


def tamper(database_url: str, *statements: object) -> None:
    async def main() -> None:
        database = await open_database(database_url)
        try:
            async with database.begin() as conn:
                for statement in statements:
                    await conn.execute(text(statement) if isinstance(statement, str) else statement)
        finally:
            await database.close()

    asyncio.run(main())


def verify(data_dir: Path, database_url: str, *args: str) -> tuple[int, str]:
    env = {"PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_DATABASE_URL": database_url,
           "PMS_GATEWAY_POLICY_PATHS": "[]"}
    result = CliRunner().invoke(app, ["audit", "verify", *args], env=env)
    return result.exit_code, result.output  # stdout and stderr, as a terminal shows them


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path}/gateway.db"
    make_trail(tmp_path, url)
    return tmp_path, url


def test_untouched_trail_verifies(trail) -> None:
    code, output = verify(*trail)
    assert code == 0, output
    assert "gw-t: 30 records, seq 1..30" in output and "1 exported head(s) checked" in output and "OK" in output


def test_edited_field_is_named(trail) -> None:
    tamper(trail[1], update(audit_records).where(audit_records.c.seq == 7).values(status=404))
    code, output = verify(*trail)
    assert code == 1
    assert "BROKEN gw-t seq 7: altered" in output and "req-0-6" in output


def test_edited_ciphertext_is_named(trail) -> None:
    tamper(trail[1], "UPDATE audit_records SET client_ip = 'v1.AAAA' WHERE seq = 12")
    code, output = verify(*trail)
    assert code == 1 and "seq 12: altered" in output


def test_deleted_row_is_named(trail) -> None:
    tamper(trail[1], delete(audit_records).where(audit_records.c.seq == 12))
    code, output = verify(*trail)
    assert code == 1
    assert "seq 12: removed: seq 12 missing" in output
    assert output.count("BROKEN") == 1  # the rest of the chain is intact


def test_deleted_range_is_named(trail) -> None:
    tamper(trail[1], delete(audit_records).where(audit_records.c.seq.between(3, 5)))
    code, output = verify(*trail)
    assert code == 1 and "seq 3: removed: seq 3 to 5 missing: 3 record(s) deleted" in output


def test_swapped_rows_are_named(trail) -> None:
    c = audit_records.c
    tamper(trail[1],
           update(audit_records).where(c.seq == 5).values(seq=-5),
           update(audit_records).where(c.seq == 6).values(seq=5),
           update(audit_records).where(c.seq == -5).values(seq=6))
    code, output = verify(*trail)
    assert code == 1
    assert "reordered: the record written as seq 5 is stored at seq 6" in output
    assert "altered" not in output and "removed" not in output


def test_far_move_is_named(trail) -> None:
    c = audit_records.c
    tamper(trail[1],
           update(audit_records).where(c.seq == 4).values(seq=-4),
           update(audit_records).where(c.seq == 20).values(seq=4),
           update(audit_records).where(c.seq == -4).values(seq=20))
    code, output = verify(*trail)
    assert code == 1
    assert "the record written as seq 4 is stored at seq 20" in output
    assert "the record written as seq 20 is stored at seq 4" in output


def test_cut_tail_with_head_fixed_is_caught_by_the_exported_head(trail) -> None:
    data_dir, url = trail

    async def last_mac() -> str:
        database = await open_database(url)
        async with database.connect() as conn:
            mac = (await conn.execute(select(audit_records.c.mac).where(audit_records.c.seq == 25))).scalar_one()
        await database.close()
        return mac

    mac = asyncio.run(last_mac())
    tamper(url, delete(audit_records).where(audit_records.c.seq > 25),
           update(audit_chain_heads).values(seq=25, mac=mac))
    exported = heads_path(data_dir).read_text()
    heads_path(data_dir).rename(data_dir / "offsite-heads.jsonl")
    code, output = verify(data_dir, url)  # the database alone looks consistent
    assert code == 0, output
    code, output = verify(data_dir, url, "--heads", str(data_dir / "offsite-heads.jsonl"))
    assert code == 1
    assert "seq 26: tail missing" in output and "seq 30 but the trail ends at seq 25" in output
    assert json.loads(exported)["seq"] == 30


def test_cut_tail_is_caught_by_the_database_head(trail) -> None:
    tamper(trail[1], delete(audit_records).where(audit_records.c.seq > 28))
    code, output = verify(*trail)
    assert code == 1 and "tail missing" in output and "head is at seq 30" in output


def test_chain_recomputed_without_the_key(trail) -> None:
    """An attacker edits seq 10 and re-chains everything after it with a key of their own,
    fixing the head too: the first recomputed record is named."""
    data_dir, url = trail

    async def recompute() -> None:
        database = await open_database(url)
        try:
            async with database.begin() as conn:
                rows = (await conn.execute(select(audit_records).where(audit_records.c.seq >= 10)
                                           .order_by(audit_records.c.seq))).all()
                prev = rows[0].prev_mac
                for row in rows:
                    values = dict(row._mapping)
                    if row.seq == 10:
                        values["path"] = "/reservations/elsewhere"
                    mac = record_mac(b"guessed key", prev, values)
                    await conn.execute(update(audit_records).where(audit_records.c.id == row.id)
                                       .values(path=values["path"], prev_mac=prev, mac=mac))
                    prev = mac
                await conn.execute(update(audit_chain_heads).values(mac=prev))
        finally:
            await database.close()

    asyncio.run(recompute())
    code, output = verify(data_dir, url)
    assert code == 1
    first = next(line for line in output.splitlines() if line.startswith("BROKEN"))
    assert "seq 10: altered" in first and "recomputed without the key" in first
    assert "seq 30: head mismatch: the record differs from the head exported" in output


def test_forged_anchor_is_named(trail) -> None:
    tamper(trail[1], delete(audit_records).where(audit_records.c.seq < 8),
           audit_anchors.insert().values(instance_id="gw-t", seq=8, prev_mac="0" * 64, mac="f" * 64,
                                         purged_before=datetime.now(UTC)))
    code, output = verify(*trail)
    assert code == 1 and "anchor invalid" in output


def test_wrong_key_file(trail, tmp_path: Path) -> None:
    other = tmp_path / "other"
    load_or_create_keys(key_path(other))
    code, output = verify(trail[0], trail[1], "--key", str(key_path(other)))
    assert code == 1 and "seq 1: altered" in output


def test_missing_key_file_is_a_clear_error(trail, tmp_path: Path) -> None:
    code, output = verify(trail[0], trail[1], "--key", str(tmp_path / "absent.key"))
    assert code == 1 and "audit key file" in output and "not found" in output


def test_postgresql_edit_and_delete(postgres_database_url: str, tmp_path: Path) -> None:
    make_trail(tmp_path, postgres_database_url)
    assert verify(tmp_path, postgres_database_url)[0] == 0
    tamper(postgres_database_url, update(audit_records).where(audit_records.c.seq == 3).values(decision="denied"),
           delete(audit_records).where(audit_records.c.seq == 17))
    code, output = verify(tmp_path, postgres_database_url)
    assert code == 1 and "seq 3: altered" in output and "seq 17: removed" in output
