#!/usr/bin/env python3
"""Console benchmark: the operator console's screens over a year and more of a busy hotel.

    .venv/bin/python bench/console_bench.py [--records 20000000] [--logins 100000] [--reuse] [--write] [--drop]

1. Fill: a PostgreSQL database (default `gw_console_bench` on $GW_BENCH_POSTGRES_URL, the
   local server) gets the gateway's schema (`open_database`: every migration step), 150
   staff users, `--logins` login history rows and `--records` audit records spread over
   400 days, as the writer stores them: personal fields (user name, client address,
   identifiers) AES-GCM sealed under real per-subject keys, keyed tags of the address and
   `reservation=N` (gateway/audit/store.py), two instances' chains (seq, MACs shaped like
   the real ones but not computed: `audit verify` is not what is measured). Pools of sealed
   values are made in Python and copied in; the rows themselves come from one
   `INSERT ... SELECT generate_series` per chunk. Filling 20 million rows takes a while:
   `--reuse` keeps a database this script filled with the same sizes (the audit key lives
   in var/console-bench/, beside it).
2. Measure: the console app as the gateway serves it (tests/console_env.py: a real
   gateway, the admin listener, an operator signed in with password and TOTP), each
   screen requested `--requests` times after one warm-up request; p50/p95/max in ms.

With --write, replaces the `console-bench` section of bench/RESULTS.md. --drop removes
the database afterwards (20 million records are some 15 GB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
START_MARK = "<!-- console-bench:start -->"
END_MARK = "<!-- console-bench:end -->"
WORK_DIR = ROOT / "var" / "console-bench"  # the key file and audit key the fill sealed with
SERVER_URL = os.environ.get("GW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAYS = 400
USERS = 150
IPS_PER_USER = 4  # two office addresses (shared by everyone, NAT) and two of their own
OFFICE_IPS = ("192.0.2.10", "192.0.2.11")
ANONYMOUS = 2000  # addresses seen before sign-in (their own subjects)
RESERVATIONS = 30_000  # numbered from 1000, in the order they were handled
HANDLERS = 2  # staff members handling each reservation
CHUNK = 1_000_000
TARGET_MS = 200.0
PATHS = ("/dashboard", "/rooms", "/guests/search", "/reports/daily", "/api/poll", "/housekeeping", "/rates",
         "/static/app.js", "/invoices", "/login")


def staff(n: int) -> str:
    return f"staff{n:03d}"


def user_ip(user: int, k: int) -> str:
    return OFFICE_IPS[k] if k < 2 else f"198.51.{user % 100}.{10 + k}"


def anonymous_ip(a: int) -> str:
    return f"203.0.{a // 250}.{a % 250 + 1}"


# -- database ------------------------------------------------------------------------------
def database_url(name: str) -> str:
    base, _, _ = SERVER_URL.rpartition("/")
    return f"{base}/{name}"


async def server_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(SERVER_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def database_exists(name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(SERVER_URL)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def filled_sizes(name: str) -> dict[str, int] | None:
    """What a previous run of this script filled (bench_meta), or None."""
    import asyncpg

    if not await database_exists(name):
        return None
    conn = await asyncpg.connect(database_url(name))
    try:
        if not await conn.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT records, logins FROM bench_meta")
        return None if row is None else {"records": row["records"], "logins": row["logins"]}
    finally:
        await conn.close()


async def fill(url: str, keys: Any, records: int, logins: int, now: dt.datetime) -> float:
    """Pools of sealed values made here, rows made by the server; returns seconds taken."""
    import asyncpg

    from gateway.audit.store import TagMaker
    from gateway.audit.subjects import SubjectCipher, SubjectKeys
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    started = time.perf_counter()
    subjects, tags = SubjectKeys(keys), TagMaker(keys)
    made: dict[str, SubjectCipher] = {}
    key_rows = []

    def subject(kind: str, value: str) -> SubjectCipher:
        subject_id, key = os.urandom(16).hex(), AESGCM.generate_key(256)
        key_rows.append((subject_id, subjects.lookup(kind, value), subjects._wrap(subject_id, key), now))
        made[f"{kind}:{value}"] = cipher = SubjectCipher(subject_id, AESGCM(key))
        return cipher

    user_rows, ip_rows, anon_rows, id_rows = [], [], [], []
    for u in range(USERS):
        cipher = subject("user", staff(u))
        user_rows.append((u, cipher.subject_id, cipher.encrypt("user_name", staff(u))))
        for k in range(IPS_PER_USER):
            ip = user_ip(u, k)
            ip_rows.append((u, k, cipher.encrypt("client_ip", ip), tags.tag("ip", ip)))
    for a in range(ANONYMOUS):
        ip = anonymous_ip(a)
        cipher = subject("ip", ip)
        anon_rows.append((a, cipher.subject_id, cipher.encrypt("client_ip", ip), tags.tag("ip", ip)))
    for r in range(1000, 1000 + RESERVATIONS):
        for h in range(HANDLERS):
            u = (r * 7 + h * 53) % USERS
            text = json.dumps({"reservation": str(r)}, sort_keys=True)
            id_rows.append((r, h, made[f"user:{staff(u)}"].encrypt("identifiers", text), tags.tag("id", f"reservation={r}")))

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE audit_records, login_history, known_ips, subject_keys, users RESTART IDENTITY CASCADE")
        await conn.execute("DROP TABLE IF EXISTS bench_meta, bench_users, bench_ips, bench_anon, bench_ids")
        await conn.execute("""
            CREATE UNLOGGED TABLE bench_users (u int PRIMARY KEY, subject text, user_ct text);
            CREATE UNLOGGED TABLE bench_ips (u int, k int, ip_ct text, tag text, PRIMARY KEY (u, k));
            CREATE UNLOGGED TABLE bench_anon (a int PRIMARY KEY, subject text, ip_ct text, tag text);
            CREATE UNLOGGED TABLE bench_ids (r int, h int, id_ct text, tag text, PRIMARY KEY (r, h));
        """)
        await conn.copy_records_to_table("subject_keys", records=key_rows,
                                         columns=["id", "lookup", "wrapped_key", "created_at"])
        for table, rows in (("bench_users", user_rows), ("bench_ips", ip_rows), ("bench_anon", anon_rows),
                            ("bench_ids", id_rows)):
            await conn.copy_records_to_table(table, records=rows)
        await conn.execute("ANALYZE bench_users, bench_ips, bench_anon, bench_ids")
        await conn.copy_records_to_table("users", records=[
            (staff(u), True, now - dt.timedelta(days=DAYS + 30), now) for u in range(USERS)],
            columns=["name", "active", "created_at", "updated_at"])
        await _fill_logins(conn, logins, now)
        # Secondary indexes are built once at the end (as a restore would), not per row.
        indexes = await conn.fetch("""
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = 'audit_records' AND NOT EXISTS (
                SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""")
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        # Unlogged while filling (no WAL for 15 GB: reads are the same); two writers.
        await conn.execute("ALTER TABLE audit_records SET UNLOGGED")
        start = now - dt.timedelta(days=DAYS)
        chunks = [(low, min(records, low + CHUNK)) for low in range(0, records, CHUNK)]
        done = [0]

        async def writer() -> None:
            own = await asyncpg.connect(url)
            try:
                while chunks:
                    low, high = chunks.pop(0)
                    await own.execute(_AUDIT_INSERT, low, high - 1, records, start, DAYS * 86400.0)
                    done[0] += high - low
                    print(f"  audit records {done[0]:,}/{records:,} ({time.perf_counter() - started:.0f} s)",
                          flush=True)
            finally:
                await own.close()

        await asyncio.gather(writer(), writer())
        for index in indexes:
            print(f"  {index['indexdef']}", flush=True)
            await conn.execute("SET maintenance_work_mem = '512MB'")
            await conn.execute(index["indexdef"])
        await conn.execute("""
            INSERT INTO audit_chain_heads (instance_id, seq, mac, updated_at)
            SELECT instance_id, max(seq), md5(instance_id) || md5(instance_id), now() FROM audit_records GROUP BY 1
            ON CONFLICT (instance_id) DO UPDATE SET seq = excluded.seq""")
        await conn.execute("DROP TABLE bench_users, bench_ips, bench_anon, bench_ids")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_meta (records bigint, logins bigint)")
        await conn.execute("INSERT INTO bench_meta VALUES ($1, $2)", records, logins)
    finally:
        await conn.close()
    return time.perf_counter() - started


# Row g of n: at spread evenly over the span (two instances, alternating); one in ten
# before sign-in (an anonymous address's subject); three in ten about a reservation, the
# reservation numbers advancing with time and each handled by one of two staff members;
# 1% refused, 0.5% outbound notifications, 0.1% operator actions.
_AUDIT_INSERT = f"""
INSERT INTO audit_records (instance_id, seq, at, request_id, user_name, session_hash, device_id, client_ip,
    country, city, asn, method, path, query, status, bytes_in, bytes_out, duration_ms, upstream_ms, decision,
    reason, identifiers, channel, extra, subject, tags, prev_mac, mac)
SELECT
    'bench-' || (g % 2), g / 2 + 1, $4::timestamptz + make_interval(secs => g::float8 * $5::float8 / $3::float8),
    md5('r' || g),
    CASE WHEN anon THEN NULL ELSE us.user_ct END,
    CASE WHEN anon THEN NULL ELSE md5('s' || uu || '-' || (g / 20000)) END,
    CASE WHEN anon THEN NULL ELSE substr(md5('d' || uu), 1, 22) END,
    CASE WHEN anon THEN an.ip_ct ELSE ip.ip_ct END,
    'CZ', 'Prague', 2852,
    CASE WHEN g % 7 = 0 THEN 'POST' ELSE 'GET' END,
    CASE WHEN outbound THEN 'smtp:guest@example.org'
         WHEN rid IS NOT NULL THEN '/reservations/' || rid || CASE WHEN g % 3 = 0 THEN '/edit' ELSE '' END
         ELSE (ARRAY{list(PATHS)!r})[1 + (g / 3) % {len(PATHS)}] END,
    CASE WHEN g % 5 = 0 THEN 'page=' || (g % 9) END,
    CASE WHEN refused THEN 403 WHEN g % 11 = 0 THEN 302 ELSE 200 END,
    CASE WHEN g % 7 = 0 THEN 800 ELSE 0 END, 2000 + g % 30000, 5 + (g % 97) / 3.0, 3 + (g % 89) / 3.0,
    CASE WHEN refused THEN 'refused' WHEN outbound THEN (ARRAY['forwarded','forwarded','forwarded','blocked',
        'deferred'])[1 + g % 5] WHEN admin THEN 'session_revoke' ELSE 'allowed' END,
    CASE WHEN refused THEN 'access rule' END,
    CASE WHEN rid IS NOT NULL THEN ids.id_ct ELSE '{{}}' END,
    CASE WHEN outbound THEN 'outbound' WHEN admin THEN 'admin' ELSE 'http' END,
    CASE WHEN outbound AND g % 2 = 0 THEN '{{"detectors": {{"email": 1, "name": 2}}}}' ELSE '{{}}' END,
    CASE WHEN anon THEN an.subject ELSE us.subject END,
    ' ' || CASE WHEN anon THEN an.tag ELSE ip.tag END || CASE WHEN rid IS NOT NULL THEN ' ' || ids.tag ELSE '' END || ' ',
    md5('p' || g) || md5('q' || g), md5('m' || g) || md5('n' || g)
FROM (
    SELECT g, anon, refused, outbound, admin, rid,
           CASE WHEN rid IS NOT NULL THEN (rid * 7 + (g % {HANDLERS}) * 53) % {USERS} ELSE (g * 7919) % {USERS} END AS uu
    FROM (
        SELECT g, g % 10 = 0 AS anon, g % 100 = 17 AS refused, g % 200 = 33 AS outbound, g % 1000 = 51 AS admin,
               CASE WHEN g % 10 IN (1, 2, 3) THEN 1000 + (g * {RESERVATIONS}::bigint / $3) END AS rid
        FROM generate_series($1::bigint, $2::bigint) AS g
    ) AS base
) AS r
LEFT JOIN bench_users us ON us.u = r.uu
LEFT JOIN bench_ips ip ON ip.u = r.uu AND ip.k = (r.g / 3) % {IPS_PER_USER}
LEFT JOIN bench_anon an ON an.a = (r.g / 10) % {ANONYMOUS}
LEFT JOIN bench_ids ids ON ids.r = r.rid AND ids.h = r.g % {HANDLERS}
"""


async def _fill_logins(conn: Any, logins: int, now: dt.datetime) -> None:
    """Logins over the span (a few percent failures, new addresses now and then) and the
    known IPs they leave."""
    user_ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM users")}
    start = now - dt.timedelta(days=DAYS)
    step = DAYS * 86400 / max(logins, 1)
    types = ("password+totp", "password+totp", "remembered_device", "password+security_key", "recovery_code")
    rows = []
    for i in range(logins):
        u = (i * 31) % USERS
        name = staff(u)
        k = i % IPS_PER_USER if i % 50 else 2 + (i // 50) % 2
        outcome = "failure" if i % 23 == 0 else "locked_out" if i % 997 == 0 else "success"
        ip = user_ip(u, k) if i % 200 else f"100.{64 + i % 50}.{i % 251}.{i % 199 + 1}"
        rows.append((user_ids[name], name, start + dt.timedelta(seconds=i * step), ip, "CZ", "Prague", 2852, outcome,
                     types[i % len(types)] if outcome == "success" else "none", os.urandom(8).hex(),
                     i % 200 == 0, None if outcome == "success" else "bad password"))
    await conn.copy_records_to_table("login_history", records=rows, columns=[
        "user_id", "username", "at", "ip", "country", "city", "asn", "outcome", "login_type", "device_id", "new_ip",
        "reason"])
    known = [(user_ids[staff(u)], user_ip(u, k), now - dt.timedelta(days=40), now - dt.timedelta(hours=k), "CZ",
              "Prague") for u in range(USERS) for k in range(IPS_PER_USER)]
    await conn.copy_records_to_table("known_ips", records=known, columns=[
        "user_id", "ip_prefix", "first_seen", "last_seen", "country", "city"])
    await conn.execute("ANALYZE login_history, known_ips, users")


# -- measuring -----------------------------------------------------------------------------
def screens(now: dt.datetime) -> list[tuple[str, str]]:
    local = now.astimezone(dt.UTC)
    day = lambda days: (local - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")  # noqa: E731
    date = lambda days: (local - dt.timedelta(days=days)).strftime("%Y-%m-%d")  # noqa: E731
    whole = day(DAYS + 1)
    return [
        ("dashboard", "/"),
        ("login history", "/logins"),
        ("login history, an older page (keyset)", "/logins?before={login}"),
        ("login history by user", f"/logins?user={staff(7)}"),
        ("login history by IP", f"/logins?ip={OFFICE_IPS[0]}"),
        ("login history, failures", "/logins?outcome=failure"),
        ("login history, new IPs, a month", f"/logins?new_ip=1&since={date(30)}&until={date(0)}"),
        ("known IPs", "/known-ips"),
        ("known IPs by user", f"/known-ips?user={staff(7)}"),
        ("sessions", "/sessions"),
        ("users", "/users"),
        ("audit trail (last 7 days)", "/audit"),
        ("audit by user", f"/audit?user={staff(7)}"),
        ("audit by user, whole span", f"/audit?user={staff(7)}&since={whole}"),
        ("audit by user, a past month", f"/audit?user={staff(7)}&since={day(300)}&until={day(270)}"),
        ("audit by decision refused", "/audit?decision=refused"),
        ("audit by decision session_revoke, whole span", f"/audit?decision=session_revoke&since={whole}"),
        ("audit by reservation=1003, whole span", f"/audit?identifier=reservation%3D1003&since={whole}"),
        ("audit by recent reservation", f"/audit?identifier=reservation%3D{1000 + RESERVATIONS - 5}"),
        ("audit by office IP", f"/audit?ip={OFFICE_IPS[0]}"),
        ("audit by anonymous IP, whole span", f"/audit?ip={anonymous_ip(17)}&since={whole}"),
        ("audit by path, a day", f"/audit?path=/rates&since={day(3)}&until={day(2)}"),
        ("audit by path, 30 days", f"/audit?path=/reservations/1020&since={day(30)}"),
        ("audit trail, a past week", f"/audit?since={day(200)}&until={day(193)}"),
        ("audit trail, an older page (keyset)", f"/audit?since={whole}&before={{record}}"),
        ("audit record", "/audit/record/{record}"),
        ("audit CSV export", "/audit?format=csv"),
        ("login history CSV export", "/logins?format=csv"),
        ("outbound", "/outbound"),
    ]


async def measure(url: str, requests: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from tests.console_env import ConsoleClient, console_env

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    async with console_env(WORK_DIR, config_overrides={"database_url": url}) as env:
        async with env.env.services.database.begin() as conn:  # a reused database has the last run's
            await conn.exec_driver_sql("DELETE FROM operators WHERE name = 'bench'")
        await env.operator("bench", "view")
        client = ConsoleClient(env)
        try:
            assert await client.login("bench") == 303
            now = dt.datetime.fromtimestamp(env.env.clock(), dt.UTC)
            async with env.env.services.database.connect() as conn:
                record = (await conn.exec_driver_sql("SELECT max(id) / 2 FROM audit_records")).scalar() or 1
                login = (await conn.exec_driver_sql("SELECT max(id) / 2 FROM login_history")).scalar() or 1
            for name, path in screens(now):
                path = path.replace("{record}", str(record)).replace("{login}", str(login))
                status, _, body = await client.get(path)
                if status != 200:
                    raise SystemExit(f"{path}: {status}\n{body[:2000]}")
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    status, _, body = await client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                times.sort()
                rows = body.count("\n") - 1 if "format=csv" in path else body.count("<tr") - 1 if "<table" in body else ""
                results.append({"screen": name, "path": path, "p50": statistics.median(times),
                                "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], "max": times[-1],
                                "rows": rows})
                print(f"  {name:48} p50 {results[-1]['p50']:7.1f} ms  p95 {results[-1]['p95']:7.1f} ms  "
                      f"rows {rows}", flush=True)
        finally:
            await client.close()
    return results, {}


def plans(keys: Any) -> dict[str, str]:
    """Why the screens are fast: the queries before migration 8 and the console's keyset
    paging, and after, side by side (EXPLAIN ANALYZE on the filled database)."""
    from gateway.audit.store import TagMaker

    tag = TagMaker(keys).tag("id", "reservation=1003")
    whole, week = "at >= now() - interval '401 days'", "at >= now() - interval '200 days' AND at < now() - interval '193 days'"
    return {
        "reservation=1003, whole span, tags LIKE, newest id first (before)":
            f"SELECT id FROM audit_records WHERE {whole} AND tags LIKE '% {tag} %' ORDER BY id DESC LIMIT 1000",
        "reservation=1003, whole span, tag-list GIN (after)":
            f"SELECT id FROM audit_records WHERE {whole} AND string_to_array(btrim(tags), ' ') @> ARRAY['{tag}'] "
            "ORDER BY at DESC, id DESC LIMIT 51",
        "a past week, newest id first (before)":
            f"SELECT id FROM audit_records WHERE {week} ORDER BY id DESC LIMIT 1000",
        "a past week, (at, id) descending (after)":
            f"SELECT id FROM audit_records WHERE {week} ORDER BY at DESC, id DESC LIMIT 51",
        "exact count of the trail": "SELECT count(*) FROM audit_records",
        "estimated count (pg_class.reltuples)":
            "SELECT reltuples::bigint FROM pg_class WHERE oid = 'audit_records'::regclass",
    }


async def explain(url: str) -> list[tuple[str, str, float]]:
    import asyncpg

    from gateway.audit.keys import key_path, load_keys

    conn = await asyncpg.connect(url)
    found = []
    try:
        for name, query in plans(load_keys(key_path(WORK_DIR / "var"))).items():
            lines = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query)]
            ms = float(next(line for line in lines if line.startswith("Execution Time")).split()[2])
            scans = [line.strip().lstrip("-> ").split("  ")[0] for line in lines
                     if "Scan" in line and "Bitmap Heap" not in line]
            found.append((name, "; ".join(scans) or lines[0].strip(), ms))
            print(f"  {name:64} {ms:9.1f} ms  {found[-1][1]}", flush=True)
    finally:
        await conn.close()
    return found


def machine() -> str:
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            f"(1/5/15 min) at the start of the measurement; Python {platform.python_version()}; commit {commit}")


async def pg_version(url: str) -> tuple[str, str]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        version = (await conn.fetchval("SHOW server_version")).split()[0]
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return version, size
    finally:
        await conn.close()


def write_results(command: str, sizes: dict[str, int], fill_seconds: float | None, where: str,
                  results: list[dict[str, Any]], requests: int, version: str, size: str,
                  explained: list[tuple[str, str, float]]) -> None:
    slow = [r for r in results if r["p95"] >= TARGET_MS]
    lines = [
        START_MARK,
        "## Operator console over a large trail (PostgreSQL)",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Machine: {where}",
        f"- Data: {sizes['records']:,} audit records over {DAYS} days (two instances; 10% before sign-in, 30% "
        f"about a reservation, 1% refused, 0.5% outbound), {sizes['logins']:,} logins of {USERS} staff, "
        f"PostgreSQL {version}, database {size}"
        + (f"; filled in {fill_seconds / 60:.0f} min" if fill_seconds else " (reused)") + ".",
        f"- Each screen: one warm-up request, then {requests} sequential requests through the admin listener "
        "by a signed-in operator (HTTP over loopback, the console's own rendering included).",
        "",
        "| screen | request | p50 ms | p95 ms | max ms | rows |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['screen']} | `{r['path']}` | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | {r['rows']} |")
    lines += ["", f"Target: every screen under {TARGET_MS:.0f} ms. "
              + ("All screens meet it at p95." if not slow else
                 "Over it at p95: " + ", ".join(r["screen"] for r in slow) + "."), ""]
    if explained:
        lines += ["What migration 8's indexes and the reader's (at, id) keyset order changed (EXPLAIN ANALYZE on "
                  "the same database; \"before\" is the statement the reader sent until then: tags LIKE, "
                  "newest id first, pages of 1,000):", "",
                  "| query | scans | ms |", "| --- | --- | ---: |"]
        lines += [f"| {name} | {scans} | {ms:,.1f} |" for name, scans, ms in explained]
        lines += ["", "Path searches need a time range and use a `text_pattern_ops` index of (path, at); totals "
                  "that would read every row are estimated (the dashboard's \"about N\" audit records)."]
    lines.append(END_MARK)
    section = "\n".join(lines) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START_MARK in text and END_MARK in text:
        head, _, rest = text.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000_000)
    parser.add_argument("--logins", type=int, default=100_000)
    parser.add_argument("--database", default="gw_console_bench")
    parser.add_argument("--reuse", action="store_true", help="keep a database this script filled with the same sizes")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--no-explain", action="store_true", help="skip the before/after query plans (about 20 s)")
    parser.add_argument("--write", action="store_true", help="replace the console-bench section of bench/RESULTS.md")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    sizes = {"records": args.records, "logins": args.logins}
    url = database_url(args.database)
    fill_seconds = None
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    if not (args.reuse and await filled_sizes(args.database) == sizes):
        print(f"filling {args.database}: {args.records:,} audit records, {args.logins:,} logins", flush=True)
        with contextlib.suppress(Exception):
            await server_admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await server_admin(f'CREATE DATABASE "{args.database}"')
        fill_seconds = await _fill_with_gateway_keys(url, sizes)
        print(f"filled in {fill_seconds:.0f} s", flush=True)
    else:
        print(f"reusing {args.database}", flush=True)
    try:
        if args.fill_only:
            return
        where = machine()
        print("measuring", flush=True)
        results, _ = await measure(url, args.requests)
        version, size = await pg_version(url)
        explained = [] if args.no_explain else await explain(url)
        if args.write:
            command = "make bench-console" if os.environ.get("MAKELEVEL") else "bench/console_bench.py " + " ".join(sys.argv[1:])
            write_results(command, sizes, fill_seconds, where, results, args.requests, version, size, explained)
    finally:
        if args.drop:
            await server_admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


async def _fill_with_gateway_keys(url: str, sizes: dict[str, int]) -> float:
    """Open the database as the gateway does (schema, migrations) and fill it with the
    audit key of the bench's data directory, the one the measured gateway will load."""
    from gateway.audit.keys import key_path, load_or_create_keys
    from gateway.db import open_database

    database = await open_database(url)
    await database.close()
    keys = load_or_create_keys(key_path(WORK_DIR / "var"))
    return await fill(url, keys, sizes["records"], sizes["logins"], dt.datetime.now(dt.UTC))


if __name__ == "__main__":
    asyncio.run(main())
