#!/usr/bin/env python3
"""Audit benchmark: how fast records are written, and what auditing costs the proxy.

    .venv/bin/python bench/audit_bench.py [--records 20000] [--duration 8] [--write]

1. Writer throughput: realistic entries (user, client IP, identifiers, query) pushed into
   the real `AuditWriter` (scrub, encrypt personal fields, chain, batch insert) until the
   queue drains, on SQLite (WAL, a file in a temporary directory) and on PostgreSQL (a
   throwaway database on $GW_BENCH_POSTGRES_URL, default the local server); also `strict`
   durability, where 64 concurrent producers each wait for their record to be stored
   (group commit).
2. Proxy throughput with auditing on and off: the gateway's real addon chain (as
   `pms-gateway run` builds it) with and without the audit addon, in a subprocess pinned
   to core 1, in front of a minimal upstream serving a 2 KB page, loaded by wrk (or a
   Python load generator) pinned to core 0, side by side in one run. Afterwards the
   number of records stored is checked against the number of requests answered.

With --write, replaces the `audit-bench` section of bench/RESULTS.md. Absolute figures on
shared machines are noise; the ratios are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
START_MARK = "<!-- audit-bench:start -->"
END_MARK = "<!-- audit-bench:end -->"
PAGE = b"<!doctype html><html><body><pre>\n" + b"Room 101 | Guest: Jane Example | 2026-05-01\n" * 46 + b"</pre></body></html>\n"
SERVER_CORE, LOADGEN_CORE = 1, 0
PAIRS = 3  # off/on runs, interleaved
BENCH_POLICY = "login:\n  public_paths: ['^/page', '^/reservations/']\naudit:\n  flush_interval: 1s\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def fast_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- helper roles (subprocesses) -----------------------------------------------------------
def role_upstream(port: int) -> None:
    from aiohttp import web

    fast_loop()

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=PAGE, headers={"Content-Type": "text/html"})

    async def main() -> None:
        server = web.Server(handler, access_log=None)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        srv.close()

    asyncio.run(main())


def role_gateway(audit: str) -> None:
    """The addon chain `pms-gateway run` builds (config from PMS_GATEWAY_*), with or
    without the audit addon."""
    from gateway.assembly import build_addons, open_services
    from gateway.audit.addon import AuditAddon
    from gateway.config import load_config
    from gateway.logs import configure_logging
    from gateway.policy.reload import PolicyHolder
    from gateway.runtime import start_gateway, wait_for_shutdown_signal

    config = load_config(None)
    configure_logging("json", "warning")
    fast_loop()

    async def main() -> None:
        policy = PolicyHolder(config.policy_paths)
        services = await open_services(config, policy)
        addons, cleanups = await build_addons(config, policy, services)
        if audit == "off":
            addons = [a for a in addons if not isinstance(a, AuditAddon)]
        running = await start_gateway(config, policy, addons)
        running.cleanups.extend(cleanups)
        try:
            await wait_for_shutdown_signal()
        finally:
            await running.stop()

    asyncio.run(main())


def role_load(url: str, connections: int, duration: float) -> None:
    """Closed-loop Python load generator (when wrk is absent): prints requests and req/s."""
    import aiohttp

    fast_loop()

    async def main() -> None:
        done = [0]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            until = time.perf_counter() + duration

            async def worker() -> None:
                while time.perf_counter() < until:
                    async with session.get(url) as response:
                        await response.read()
                    done[0] += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        print(f"requests={done[0]} rps={done[0] / elapsed:.1f}")

    asyncio.run(main())


# -- 1. writer throughput ------------------------------------------------------------------
def entries(count: int, prefix: str) -> list:
    from gateway.audit.entry import AuditEntry

    now = time.time()
    return [
        AuditEntry(request_id=f"{prefix}{n:08d}", at=now, decision="allowed", user=f"staff{n % 25}",
                   session_hash="5e55" * 4, device_id="dev" * 4, client_ip=f"192.0.2.{n % 200}", method="GET",
                   path=f"/reservations/{n % 5000}", query="view=full&page=2", status=200, bytes_out=2048,
                   duration_ms=1.7, upstream_ms=1.1)
        for n in range(count)
    ]


async def writer_throughput(url: str, data_dir: Path, count: int) -> dict[str, float]:
    from gateway.audit.prepare import EntryPreparer
    from gateway.audit.keys import key_path, load_or_create_keys
    from gateway.audit.spool import Spool
    from gateway.audit.store import AuditStore
    from gateway.audit.writer import AuditWriter, WriterSettings
    from gateway.db import open_database
    from gateway.policy.schema import Policy

    database = await open_database(url)
    policy = Policy()
    store = AuditStore(database, load_or_create_keys(key_path(data_dir)))

    def writer(name: str, **settings: float) -> AuditWriter:
        values = WriterSettings(**({"batch_size": 500, "flush_interval": 1.0, "queue_size": 10 * count} | settings))
        return AuditWriter(store, Spool(data_dir / "spool", name), name, EntryPreparer(lambda: policy, None),
                           lambda: values)

    try:
        normal = writer("bench-normal")
        await normal.start()
        batch = entries(count, "n")
        started = time.perf_counter()
        for item in batch:
            normal.offer(item)
        await normal.close()
        normal_rate = count / (time.perf_counter() - started)

        strict = writer("bench-strict")
        await strict.start()
        strict_batch = entries(count // 4, "s")
        started = time.perf_counter()

        async def producer(items: list) -> None:
            for item in items:
                await strict.put_durable(item)

        await asyncio.gather(*(producer(strict_batch[i::64]) for i in range(64)))
        strict_rate = len(strict_batch) / (time.perf_counter() - started)
        await strict.close()
    finally:
        await database.close()
    return {"normal": normal_rate, "strict": strict_rate}


async def postgres_database(admin_url: str) -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"gw_audit_bench_{os.getpid()}"
    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False), name


async def drop_postgres_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- 2. proxy throughput -------------------------------------------------------------------
def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if http_ok(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"not ready: {url}\n{log.read_text()[-3000:]}")


def load(url: str, duration: int, connections: int, use_wrk: bool) -> tuple[float, int]:
    if use_wrk:
        out = subprocess.run(pin(LOADGEN_CORE) + ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
                             capture_output=True, text=True, timeout=duration + 60).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        return rps, total
    out = subprocess.run(pin(LOADGEN_CORE) + [sys.executable, __file__, "--role", "load", url, str(connections),
                                              str(duration)], capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"requests=(\d+) rps=([\d.]+)", out.stdout)
    if match is None:
        raise RuntimeError(out.stderr[-3000:])
    return float(match.group(2)), int(match.group(1))


def proxy_throughput(workdir: Path, duration: int, connections: int, use_wrk: bool) -> dict:
    upstream_port = free_port()
    procs: list[subprocess.Popen] = []
    results: dict = {}
    policy = workdir / "policy.yaml"
    policy.write_text(BENCH_POLICY)

    def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = workdir / f"{name}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(proc)
        return proc, log

    try:
        start("upstream", pin(SERVER_CORE) + [sys.executable, __file__, "--role", "upstream", str(upstream_port)])
        for audit in ("off", "on") * PAIRS:  # interleaved, so drift hits both
            port = free_port()
            data_dir = workdir / f"data-{audit}-{len(procs)}"
            env = {**os.environ,
                   "PMS_GATEWAY_LISTEN__PORT": str(port), "PMS_GATEWAY_PUBLIC_URLS": f"[http://127.0.0.1:{port}]",
                   "PMS_GATEWAY_UPSTREAM__URL": f"http://127.0.0.1:{upstream_port}",
                   "PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_POLICY_PATHS": f"[{policy}]",
                   "PMS_GATEWAY_INSTANCE_ID": "bench", "PMS_GATEWAY_ADMIN__ENABLED": "false"}
            proc, log = start(f"gateway-{audit}", pin(SERVER_CORE) + [sys.executable, __file__, "--role", "gateway",
                                                                      audit], env)
            url = f"http://127.0.0.1:{port}/page2k"
            wait_ready(url, proc, log)
            load(url, 2, connections, use_wrk)  # warm-up
            before = 0
            if audit == "on":
                time.sleep(2.5)  # the warm-up's records are written (flush_interval 1 s)
                before = asyncio.run(count_records(data_dir))
            rps, total = load(url, duration, connections, use_wrk)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a stuck shutdown: note it, do not hang the run
                print(f"  gateway ({audit}) did not stop within 60 s; killed", flush=True)
                proc.kill()
                proc.wait(timeout=10)
            stored = asyncio.run(count_records(data_dir)) - before if audit == "on" else None
            results.setdefault(audit, []).append({"rps": rps, "requests": total, "stored": stored})
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
    return results


async def count_records(data_dir: Path) -> int:
    """Records stored; raises if any request was recorded twice."""
    from sqlalchemy import func, select

    from gateway.db import audit_records, open_database

    database = await open_database(f"sqlite:///{data_dir / 'gateway.db'}")
    try:
        async with database.connect() as conn:
            total, distinct = (await conn.execute(
                select(func.count(), func.count(audit_records.c.request_id.distinct()))
            )).one()
    finally:
        await database.close()
    if total != distinct:
        raise AssertionError(f"{total - distinct} requests recorded twice")
    return int(total)


# -- report --------------------------------------------------------------------------------
def report(args: argparse.Namespace, writers: dict[str, dict[str, float]], proxy: dict, use_wrk: bool) -> str:
    best = {audit: max(run["rps"] for run in runs) for audit, runs in proxy.items()}
    on_runs = proxy["on"]
    pair_ratios = sorted(on["rps"] / off["rps"] for off, on in zip(proxy["off"], proxy["on"], strict=True))
    median_ratio = pair_ratios[len(pair_ratios) // 2]
    lines = [
        "## Audit trail",
        "",
        f"Command: `.venv/bin/python bench/audit_bench.py --records {args.records} --duration {args.duration} --write` "
        f"({dt.date.today().isoformat()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}).",
        "",
        "Records written per second by the real writer (scrub, encrypt personal fields, HMAC chain, batched "
        "insert; one process, one core):",
        "",
        "| store | normal (batches of 500) | strict (64 waiting producers, group commit) |",
        "| --- | ---: | ---: |",
    ]
    for name, rates in writers.items():
        lines.append(f"| {name} | {rates['normal']:,.0f} /s | {rates['strict']:,.0f} /s |")
    generator = "wrk" if use_wrk else "Python load generator"
    lines += [
        "",
        f"Proxy throughput, 2 KB page, {args.connections} connections, {generator} on core {LOADGEN_CORE}, gateway "
        f"(every addon of `pms-gateway run`, SQLite audit store) on core {SERVER_CORE}, {PAIRS} interleaved "
        f"off/on pairs of {args.duration} s runs:",
        "",
        "| audit | best req/s | ratio of bests | runs (req/s) |",
        "| --- | ---: | ---: | --- |",
        f"| off | {best['off']:,.0f} | 1.00 | {', '.join(f'{r['rps']:,.0f}' for r in proxy['off'])} |",
        f"| on | {best['on']:,.0f} | {best['on'] / best['off']:.2f} | {', '.join(f'{r['rps']:,.0f}' for r in on_runs)} |",
        "",
        f"Median on/off ratio of the pairs: {median_ratio:.2f} (pairs: {', '.join(f'{r:.2f}' for r in pair_ratios)}).",
        "",
        "Records stored during the measured runs with audit on: " + ", ".join(
            f"{run['stored']:,} for {run['requests']:,} answers counted by the load generator" for run in on_runs) +
        " (it does not count answers still in flight when it stops). Every answer recorded: "
        + ("yes" if all(run["stored"] >= run["requests"] for run in on_runs) else "NO")
        + "; none recorded twice (checked by request id).",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{START_MARK}\n{text}{END_MARK}"
    if START_MARK in current and END_MARK in current:
        before, rest = current.split(START_MARK, 1)
        after = rest.split(END_MARK, 1)[1]
        current = before + block + after
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="entries per writer measurement")
    parser.add_argument("--duration", type=int, default=8, help="seconds per proxy run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--postgres", default=os.environ.get("GW_BENCH_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        {"upstream": lambda: role_upstream(int(rest[0])), "gateway": lambda: role_gateway(rest[0]),
         "load": lambda: role_load(rest[0], int(rest[1]), float(rest[2]))}[role]()
        return
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        workdir = Path(tmp)
        writers: dict[str, dict[str, float]] = {}
        print("writer throughput: SQLite ...", flush=True)
        writers["SQLite (WAL)"] = asyncio.run(writer_throughput(f"sqlite:///{workdir / 'w.db'}", workdir, args.records))
        print("writer throughput: PostgreSQL ...", flush=True)
        try:
            url, name = asyncio.run(postgres_database(args.postgres))
        except Exception as exc:  # no server: say so rather than fail the whole run
            print(f"  PostgreSQL unavailable ({type(exc).__name__}: {exc}); skipped", flush=True)
        else:
            try:
                writers["PostgreSQL"] = asyncio.run(writer_throughput(url, workdir, args.records))
            finally:
                asyncio.run(drop_postgres_database(args.postgres, name))
        print("proxy throughput, audit off/on ...", flush=True)
        proxy = proxy_throughput(workdir, args.duration, args.connections, use_wrk)
    text = report(args, writers, proxy, use_wrk)
    print(text)
    if args.write:
        write_section(text)
        print(f"updated {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
