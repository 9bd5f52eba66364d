#!/usr/bin/env python3
"""Proxy benchmark: the gateway against the bare upstream and against nginx, in one run.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--write]

Starts a minimal aiohttp+uvloop upstream, the gateway (`pms-gateway run`, one worker) and
nginx (when installed) in front of it, all pinned to core 1; drives them with wrk (or a
Python load generator when wrk is absent) pinned to core 0; measures the latency the
gateway adds at a fixed 1,000 req/s with an open-loop generator; profiles the gateway
under load with py-spy; prints the figures and the ratios, and with --write replaces the
`proxy` section of bench/RESULTS.md. See bench/README.md for what each figure means.

The same file also holds the helper processes it starts (`--role upstream|closed|open|
addons`), so the benchmark is one self-contained script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BENCH_POLICY = ROOT / "bench" / "proxy_bench_policy.yaml"
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
START_MARK = "<!-- proxy-bench:start -->"
END_MARK = "<!-- proxy-bench:end -->"

PAGES = {"/page2k": 2 * 1024, "/page100k": 100 * 1024}
TARGETS = ("direct", "gateway", "gateway-lean", "nginx", "bare", "lean")
ON_PATH = {
    "direct": ("upstream",),
    "gateway": ("gateway", "upstream"),
    "gateway-lean": ("gateway-lean", "upstream"),  # the same gateway with listen.engine: lean
    "nginx": ("nginx", "upstream"),
    "bare": ("bare", "upstream"),
    "lean": ("lean", "upstream"),  # the smallest relay on the lean engine: the Python ceiling
}
GATEWAYS = ("gateway", "gateway-lean")
BARE_PAGES = ("/page2k",)  # the bare aiohttp proxy and the lean relay are reference points for the 2 KB target only
SERVER_CORE = 1  # upstream, gateway and nginx
LOADGEN_CORE = 0  # wrk and the Python load generators

# The targets this benchmark checks, stated in bench/README.md.
TARGET_RPS_VS_NGINX = 0.25  # gateway req/s >= 0.25x nginx on the 2 KB page
TARGET_ADDED_P99_MS = 2.0  # gateway p99 - direct p99 <= 2 ms at the fixed rate
SETTLE_LIMIT = 20.0  # seconds to wait at most, per cell, for the gateway to finish its backlog
SETTLE_BUDGET = 40.0  # ... and in a whole run, so it stays under 3 minutes
MAX_RETRIES = 3  # cells measured again at most, so the run stays under 3 minutes
DISTURBED_PCT = 20.0  # other jobs' CPU (% of a core) above which a cell is measured again, once


# ---------------------------------------------------------------------------------------
# Helper roles (run in subprocesses started by this script)
# ---------------------------------------------------------------------------------------


def page_body(size: int) -> bytes:
    """An HTML page of exactly `size` bytes."""
    head = b"<!doctype html><html><head><title>bench</title></head><body><pre>\n"
    tail = b"</pre></body></html>\n"
    line = b"Room 101 | Guest: Jane Example | Arrival 2026-05-01 | Departure 2026-05-04 | Rate BAR\n"
    filler = (line * (size // len(line) + 1))[: size - len(head) - len(tail)]
    body = head + filler + tail
    assert len(body) == size
    return body


def fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def role_upstream(port: int) -> None:
    """The upstream: aiohttp's low-level server, uvloop, pre-built pages, keep-alive."""
    import asyncio

    from aiohttp import web

    fast_loop()
    bodies = {path: page_body(size) for path, size in PAGES.items()}
    content_type = {"Content-Type": "text/html; charset=utf-8"}

    async def handler(request: web.BaseRequest) -> web.Response:
        body = bodies.get(request.path)
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body, headers=content_type)

    async def main() -> None:
        await serve_until_signal(handler, port)

    asyncio.run(main())


async def serve_until_signal(handler, port: int) -> None:
    """A bare aiohttp low-level server on loopback until SIGINT/SIGTERM (upstream and bare proxy)."""
    import asyncio

    from aiohttp import web

    server = web.Server(handler, access_log=None, keepalive_timeout=75)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    await server.shutdown(1)


def role_lean(port: int, upstream: str) -> None:
    """The smallest relay on the lean engine: an httptools request parser and the gateway's
    own upstream pool (gateway.proxy.lean.upstream), the body read whole, no header work,
    no features. The Python ceiling the gateway on the lean engine is measured against."""
    import asyncio
    from urllib.parse import urlsplit

    import httptools

    sys.path.insert(0, str(ROOT))
    from gateway.proxy.lean.upstream import UpstreamPool

    fast_loop()
    parts = urlsplit(upstream)

    async def main() -> None:
        pool = UpstreamPool(parts.hostname or "127.0.0.1", parts.port or 80, ssl_context=None, size=100,
                            connect_timeout=5, read_timeout=60)
        host = f"Host: {parts.netloc}\r\n\r\n".encode()

        class Relay(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                self.transport = transport
                self.parser = httptools.HttpRequestParser(self)
                self.url = b""

            def data_received(self, data: bytes) -> None:
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError:
                    self.transport.close()

            def on_url(self, url: bytes) -> None:
                self.url = url

            def on_message_complete(self) -> None:
                asyncio.ensure_future(self.forward(self.url))

            async def forward(self, url: bytes) -> None:
                connection, _ = await pool.acquire()
                try:
                    head = await connection.exchange(b"GET " + url + b" HTTP/1.1\r\n" + host, None,
                                                     chunked=False, length=None, head_only=False)
                    body = b"".join([chunk async for chunk in connection.iter_body()])
                finally:
                    pool.release(connection)
                self.transport.write(b"HTTP/1.1 %d OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                                     b"Content-Length: %d\r\n\r\n%b" % (head.status, len(body), body))

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(Relay, "127.0.0.1", port, backlog=1024, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        listener.close()
        pool.close()

    asyncio.run(main())


def role_bare(port: int, upstream: str) -> None:
    """The smallest aiohttp+uvloop reverse proxy: one pooled client session, the body read
    whole, no header work. The floor any aiohttp-based proxy starts from."""
    import asyncio

    import aiohttp
    from aiohttp import web

    fast_loop()

    async def main() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

        async def handler(request: web.BaseRequest) -> web.Response:
            async with session.get(upstream + request.raw_path, headers={"Host": request.host}) as response:
                body = await response.read()
                content_type = {"Content-Type": response.headers.get("Content-Type", "application/octet-stream")}
                return web.Response(body=body, status=response.status, headers=content_type)

        await serve_until_signal(handler, port)
        await session.close()

    asyncio.run(main())


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def latency_summary(latencies: list[float]) -> dict:
    values = sorted(latencies)
    return {
        "p50_ms": percentile(values, 50) * 1000,
        "p90_ms": percentile(values, 90) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "p999_ms": percentile(values, 99.9) * 1000,
        "max_ms": (values[-1] * 1000) if values else float("nan"),
    }


def role_closed(url: str, connections: int, duration: float, warmup: float) -> None:
    """Closed loop: `connections` workers each send the next request when one returns."""
    import asyncio

    import aiohttp

    fast_loop()

    async def main() -> dict:
        latencies: list[float] = []
        statuses: Counter = Counter()
        sent = [0]
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

            async def worker(until: float, record: bool) -> None:
                while True:
                    started = time.perf_counter()
                    if started >= until:
                        return
                    sent[0] += 1
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            status = str(response.status)
                    except Exception as exc:  # counted, never fatal
                        status = type(exc).__name__
                    if record:
                        latencies.append(time.perf_counter() - started)
                        statuses[status] += 1

            if warmup > 0:
                until = time.perf_counter() + warmup
                await asyncio.gather(*(worker(until, False) for _ in range(connections)))
            warmup_requests = sent[0]
            started = time.perf_counter()
            until = started + duration
            await asyncio.gather(*(worker(until, True) for _ in range(connections)))
            elapsed = time.perf_counter() - started
        return {
            "requests": len(latencies),
            "warmup_requests": warmup_requests,
            "rps": len(latencies) / elapsed,
            "statuses": dict(statuses),
            **latency_summary(latencies),
        }

    print(json.dumps(asyncio.run(main())))


def role_open(url: str, rate: float, duration: float, warmup: float) -> None:
    """Open loop: requests start on a fixed schedule whatever the answers do.

    Latency is measured from the moment each request is sent to the end of its body; the
    schedule's own lateness (the generator falling behind) is reported apart, so a slow
    generator shows up as such and not as server latency.
    """
    import asyncio

    import aiohttp

    fast_loop()

    async def main() -> dict:
        latencies: list[float] = []
        lateness: list[float] = []
        statuses: Counter = Counter()
        tasks: set[asyncio.Task] = set()
        connector = aiohttp.TCPConnector(limit=512, limit_per_host=512)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

            async def one(record: bool) -> None:
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        status = str(response.status)
                except Exception as exc:
                    status = type(exc).__name__
                if record:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1

            async def schedule(seconds: float, record: bool) -> float:
                count = int(rate * seconds)
                interval = 1.0 / rate
                start = time.perf_counter()
                sent = 0
                while sent < count:
                    now = time.perf_counter()
                    due = start + sent * interval
                    if due > now:
                        await asyncio.sleep(due - now)
                        continue
                    while sent < count and start + sent * interval <= now:
                        if record:
                            lateness.append(now - (start + sent * interval))
                        task = asyncio.create_task(one(record))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        sent += 1
                elapsed = time.perf_counter() - start
                if tasks:
                    await asyncio.gather(*list(tasks))
                return elapsed

            if warmup > 0:
                await schedule(warmup, False)
            warmup_requests = int(rate * warmup) if warmup > 0 else 0
            elapsed = await schedule(duration, True)
        late = sorted(lateness)
        return {
            "requests": len(latencies),
            "warmup_requests": warmup_requests,
            "rate": rate,
            "achieved_rps": len(latencies) / elapsed if elapsed else 0.0,
            "statuses": dict(statuses),
            "schedule_lag_p99_ms": percentile(late, 99) * 1000,
            **latency_summary(latencies),
        }

    print(json.dumps(asyncio.run(main())))


def role_addons(config_path: str) -> None:
    """Print the addons `pms-gateway run` builds for this configuration (class names)."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from gateway.assembly import build_addons
    from gateway.config import load_config
    from gateway.policy.reload import PolicyHolder

    async def main() -> list[str]:
        config = load_config(config_path)
        policy = PolicyHolder(config.policy_paths)
        addons, cleanups = await build_addons(config, policy)
        names = [f"{type(a).__module__}.{type(a).__qualname__}" for a in addons]
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        return names

    print(json.dumps(asyncio.run(main())))


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if can_pin() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every subprocess this run starts; all are stopped on exit, whatever happened.

    Each child gets a session (and process group) of its own, so Ctrl+C reaches only this
    script, which then stops them in order; their output goes to files in the work dir.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.out", "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        out.close()
        self.started.append((name, proc))
        return proc

    def output(self, name: str) -> str:
        path = self.workdir / f"{name}.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _name, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            # a group may outlive its leader (nginx's worker): end what is left of it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.started.clear()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, proc: subprocess.Popen, procs: Processes, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.output(name)}")
        try:
            status, _ = http_get(url, timeout=1)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} after {timeout}s ({last}):\n{procs.output(name)}")


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "pms-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def write_gateway_config(workdir: Path, port: int, upstream_port: int, data_dir: Path, policies: list[Path],
                         engine: str = "aiohttp") -> Path:
    import yaml

    config = {
        "listen": {"host": "127.0.0.1", "port": port, "engine": engine},
        "public_urls": [f"http://127.0.0.1:{port}"],
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
        "data_dir": str(data_dir),
        "policy_paths": [str(p) for p in policies],
        "admin": {"enabled": False},
        "log": {"level": "warning"},
    }
    path = workdir / f"config-{data_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def nginx_config(workdir: Path, port: int, upstream_port: int) -> Path:
    tmp = workdir / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers would otherwise run as nobody
    text = f"""\
{user}worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream pms {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://pms;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 16 16k;
            proxy_busy_buffers_size 32k;
        }}
    }}
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------
# CPU accounting: what each of our processes used, and what others took meanwhile
# ---------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def core_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per core from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(v) for v in values[:8]]
                idle = numbers[3] + numbers[4]  # idle + iowait
                out[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return out


def group_ticks(pgids: dict[str, int]) -> dict[str, int]:
    """utime+stime of every live process in each of our process groups (nginx's worker too)."""
    wanted = {pgid: name for name, pgid in pgids.items()}
    out = dict.fromkeys(pgids, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        name = wanted.get(int(fields[2]))
        if name is not None:
            out[name] += int(fields[11]) + int(fields[12])
    return out


def children_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSnapshot:
    at: float
    cores: dict[int, tuple[int, int]]
    groups: dict[str, int]
    children: float

    @classmethod
    def take(cls, pgids: dict[str, int]) -> CpuSnapshot:
        return cls(time.monotonic(), core_ticks(), group_ticks(pgids), children_seconds())


@dataclass
class CpuUse:
    seconds: float
    per_process: dict[str, float]  # CPU seconds of each server process (group)
    loadgen: float  # CPU seconds of the finished load generators
    other_pct: float  # CPU taken by everything else (other jobs on the machine), % of one core

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
        seconds = b.at - a.at
        per_process = {name: (b.groups.get(name, 0) - ticks) / TICK for name, ticks in a.groups.items()}
        loadgen = b.children - a.children
        busy = sum(b.cores[c][0] - a.cores[c][0] for c in b.cores if c in a.cores) / TICK
        other = max(0.0, busy - sum(per_process.values()) - loadgen)
        return cls(seconds, per_process, loadgen, 100 * other / seconds if seconds else 0.0)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


@dataclass
class Throughput:
    target: str
    page: str
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-200 answers and socket errors
    detail: str = ""
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU microseconds per request, per process
    other_pct: float = 0.0  # other jobs' CPU during the cell, % of one core
    drain_s: float | None = None  # how long the proxy kept a core busy after the load stopped


@dataclass
class FixedRate:
    target: str
    rate: float
    achieved_rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    schedule_lag_p99_ms: float
    bad: int
    cpu_us: dict[str, float] = field(default_factory=dict)
    other_pct: float = 0.0
    drain_s: float | None = None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """req/s, p50/p99 and error counts from `wrk --latency` output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"unreadable wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "requests": int(total.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: Processes) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = procs
        self.use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
        self.use_nginx = not args.no_nginx and shutil.which("nginx") is not None
        self.urls: dict[str, str] = {}
        self.pgids: dict[str, int] = {}  # server process groups by name, for CPU accounting
        self.addons: list[str] | str = "unknown"
        self.policies: list[Path] = []
        self.notes: list[str] = []
        self.settle_budget = 5.0 if args.smoke else SETTLE_BUDGET
        self.quiet_budget = args.wait_quiet
        self.drained_cpu = 0.0

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def helper(self, *role_args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *role_args]

    # -- start ----------------------------------------------------------------------

    def start_all(self) -> None:
        upstream_port = free_port()
        proc = self.procs.start(
            "upstream", pin(SERVER_CORE) + self.helper("--role", "upstream", "--port", str(upstream_port))
        )
        self.urls["direct"] = f"http://127.0.0.1:{upstream_port}"
        wait_ready(self.urls["direct"] + "/page2k", proc, self.procs, "upstream")
        self.pgids["upstream"] = proc.pid

        self.policies = ([DEFAULT_POLICY] if DEFAULT_POLICY.exists() else []) + [BENCH_POLICY]
        probe = self.start_addon_probe(upstream_port)
        port = free_port()
        config = write_gateway_config(self.workdir, port, upstream_port, self.workdir / "gateway-data", self.policies)
        proc = self.procs.start("gateway", pin(SERVER_CORE) + gateway_command() + ["run", "--config", str(config)], cwd=ROOT)
        self.urls["gateway"] = f"http://127.0.0.1:{port}"
        wait_ready(self.urls["gateway"] + "/_gateway/health", proc, self.procs, "gateway")
        self.pgids["gateway"] = proc.pid
        self.addons = self.finish_addon_probe(probe)

        port = free_port()
        config = write_gateway_config(self.workdir, port, upstream_port, self.workdir / "lean-data", self.policies,
                                      engine="lean")
        proc = self.procs.start("gateway-lean", pin(SERVER_CORE) + gateway_command() + ["run", "--config", str(config)],
                                cwd=ROOT)
        self.urls["gateway-lean"] = f"http://127.0.0.1:{port}"
        wait_ready(self.urls["gateway-lean"] + "/_gateway/health", proc, self.procs, "gateway-lean")
        self.pgids["gateway-lean"] = proc.pid

        port = free_port()
        proc = self.procs.start(
            "lean", pin(SERVER_CORE) + self.helper("--role", "lean", "--port", str(port), "--url", self.urls["direct"])
        )
        self.urls["lean"] = f"http://127.0.0.1:{port}"
        wait_ready(self.urls["lean"] + "/page2k", proc, self.procs, "lean")
        self.pgids["lean"] = proc.pid

        port = free_port()
        proc = self.procs.start(
            "bare", pin(SERVER_CORE) + self.helper("--role", "bare", "--port", str(port), "--url", self.urls["direct"])
        )
        self.urls["bare"] = f"http://127.0.0.1:{port}"
        wait_ready(self.urls["bare"] + "/page2k", proc, self.procs, "bare")
        self.pgids["bare"] = proc.pid

        if self.use_nginx:
            port = free_port()
            conf = nginx_config(self.workdir, port, upstream_port)
            cmd = pin(SERVER_CORE) + ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")]
            proc = self.procs.start("nginx", cmd)
            self.urls["nginx"] = f"http://127.0.0.1:{port}"
            try:
                wait_ready(self.urls["nginx"] + "/page2k", proc, self.procs, "nginx")
                self.pgids["nginx"] = proc.pid
            except RuntimeError as exc:
                self.log(f"nginx did not start, skipped: {exc}")
                self.notes.append("nginx was installed but did not start; skipped")
                self.use_nginx = False
                del self.urls["nginx"]
        else:
            self.notes.append("nginx not installed (or --no-nginx): nginx column skipped")

    def start_addon_probe(self, upstream_port: int) -> subprocess.Popen:
        """Ask `build_addons` which addons `run` builds for the bench config (own data dir),
        in a process of its own while the gateway starts."""
        config = write_gateway_config(self.workdir, free_port(), upstream_port, self.workdir / "probe-data", self.policies)
        return self.procs.start("addon-probe", self.helper("--role", "addons", "--config", str(config)), cwd=ROOT)

    def finish_addon_probe(self, probe: subprocess.Popen) -> list[str] | str:
        try:
            code = probe.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return "unknown (the addon probe did not finish in 30 s)"
        output = self.procs.output("addon-probe").strip().splitlines()
        if code == 0:
            with contextlib.suppress(ValueError, IndexError):
                return json.loads(output[-1])
        return f"unknown (addon probe failed: {output[-1] if output else code})"

    def wait_quiet(self) -> None:
        """With --wait-quiet, before each cell: wait until other jobs use less than
        DISTURBED_PCT of a core for 2 s. The waiting is bounded by the option, for the run."""
        warned = False
        while self.quiet_budget > 0:
            started = time.monotonic()
            before = CpuSnapshot.take(self.pgids)
            time.sleep(2)
            other = CpuUse.between(before, CpuSnapshot.take(self.pgids)).other_pct
            self.quiet_budget -= time.monotonic() - started
            if other < DISTURBED_PCT:
                return
            if not warned:
                self.log(f"  other jobs use {other:.0f}% of a core: waiting for a quiet machine")
                warned = True
        if warned and "--wait-quiet" not in " ".join(self.notes):
            self.notes.append(f"the --wait-quiet {self.args.wait_quiet:g} s budget ran out while the machine was busy")

    def check_pages(self) -> list[str]:
        """Every target answers 200 with the full page before anything is measured."""
        problems = []
        for target, base in self.urls.items():
            for page, size in PAGES.items():
                try:
                    status, body = http_get(base + page, timeout=5)
                except OSError as exc:
                    problems.append(f"{target}{page}: {exc}")
                    continue
                if status != 200 or len(body) != size:
                    problems.append(f"{target}{page}: HTTP {status}, {len(body)} bytes (expected 200, {size})")
        return problems

    # -- load ---------------------------------------------------------------------

    def closed_loop(self, target: str, page: str, duration: int, warmup: float) -> Throughput:
        url = self.urls[target] + page
        conns = self.args.connections
        if self.use_wrk:
            if warmup > 0:
                self.run(pin(LOADGEN_CORE) + ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(warmup))}s", url], duration + 30)
            cmd = pin(LOADGEN_CORE) + ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", url]
            before = CpuSnapshot.take(self.pgids)
            out = self.run(cmd, duration + 30)
            cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
            figures = parse_wrk(out)
            bad = figures["non2xx"] + figures["errors"]
            row = Throughput(target, page, "wrk", figures["rps"], figures["p50_ms"], figures["p99_ms"],
                             figures["requests"], bad)
            served = figures["requests"]
        else:
            cmd = pin(LOADGEN_CORE) + self.helper(
                "--role", "closed", "--url", url, "--connections", str(conns),
                "--seconds", str(duration), "--warmup", str(warmup),
            )
            before = CpuSnapshot.take(self.pgids)
            figures = json.loads(self.run(cmd, duration + warmup + 30).strip().splitlines()[-1])
            cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
            bad = sum(n for status, n in figures["statuses"].items() if status != "200")
            row = Throughput(target, page, "python", figures["rps"], figures["p50_ms"], figures["p99_ms"],
                             figures["requests"], bad, json.dumps(figures["statuses"]))
            served = figures["requests"] + figures["warmup_requests"]
        self.account(row, target, cpu, served)
        return row

    def fixed_rate(self, target: str, page: str, duration: int, warmup: float) -> FixedRate:
        url = self.urls[target] + page
        cmd = pin(LOADGEN_CORE) + self.helper(
            "--role", "open", "--url", url, "--rate", str(self.args.rate),
            "--seconds", str(duration), "--warmup", str(warmup),
        )
        before = CpuSnapshot.take(self.pgids)
        figures = json.loads(self.run(cmd, duration + warmup + 30).strip().splitlines()[-1])
        cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
        bad = sum(n for status, n in figures["statuses"].items() if status != "200")
        row = FixedRate(target, self.args.rate, figures["achieved_rps"], figures["requests"], figures["p50_ms"],
                        figures["p99_ms"], figures["p999_ms"], figures["max_ms"], figures["schedule_lag_p99_ms"], bad)
        self.account(row, target, cpu, figures["requests"] + figures["warmup_requests"])
        return row

    def account(self, row: Throughput | FixedRate, target: str, cpu: CpuUse, served: int) -> None:
        row.other_pct = cpu.other_pct
        if target in GATEWAYS:
            row.drain_s = self.settle(target)
        if served:
            # the gateway's work left over when the load stopped (drained in settle) belongs to the cell
            extra = self.drained_cpu if target in GATEWAYS else 0.0
            row.cpu_us = {
                name: (cpu.per_process.get(name, 0.0) + (extra if name == target else 0.0)) * 1e6 / served
                for name in ON_PATH[target]
            }

    def settle(self, name: str) -> float:
        """Wait until `name` stops working after a load (background work such as audit
        writing catches up), so the next cell starts from a quiet gateway. Returns the
        seconds it stayed busy; bounded per call and per run."""
        window, quiet = 0.5, 0.10  # a 0.5 s window under 10% of a core counts as quiet
        limit = min(SETTLE_LIMIT, self.settle_budget)
        started = time.monotonic()
        self.drained_cpu = 0.0
        while True:
            before = group_ticks({name: self.pgids[name]})[name]
            time.sleep(window)
            used = (group_ticks({name: self.pgids[name]})[name] - before) / TICK
            elapsed = time.monotonic() - started
            if used < quiet * window:
                busy = max(0.0, elapsed - window)
                break
            self.drained_cpu += used
            if elapsed >= limit:
                busy = elapsed
                self.notes.append(f"the {name} was still busy {elapsed:.0f} s after a cell; measured on regardless")
                break
        self.settle_budget = max(0.0, self.settle_budget - busy)
        return busy

    def run(self, cmd: list[str], timeout: float) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # -- profile ------------------------------------------------------------------

    def profile(self, seconds: int) -> dict | None:
        """Sample the gateway with py-spy while wrk (or the Python generator) loads it."""
        py_spy = py_spy_path()
        if py_spy is None:
            self.notes.append("py-spy not installed: no profile (`.venv/bin/pip install py-spy`)")
            return None
        url = self.urls["gateway"] + "/page2k"
        if self.use_wrk:
            load_cmd = pin(LOADGEN_CORE) + ["wrk", "-t1", f"-c{self.args.connections}", f"-d{seconds + 3}s", url]
        else:
            load_cmd = pin(LOADGEN_CORE) + self.helper(
                "--role", "closed", "--url", url, "--connections", str(self.args.connections),
                "--seconds", str(seconds + 3), "--warmup", "0",
            )
        raw = self.workdir / "gateway-profile.txt"
        self.settle("gateway")
        # The upstream moves to the load generator's core for this last phase: the gateway
        # then has core 1 to itself, so a sample in a send() is the send and not the gateway
        # waiting for the core while the upstream it just woke runs.
        moved = can_pin() and subprocess.run(
            ["taskset", "-a", "-p", "-c", str(LOADGEN_CORE), str(self.pgids["upstream"])], capture_output=True
        ).returncode == 0
        load = self.procs.start("profile-load", load_cmd)
        pgids = {**self.pgids, "loadgen": load.pid}
        gateway_pid = self.pgids["gateway"]
        try:
            time.sleep(1)
            # py-spy runs on core 0; it stops the gateway for each sample (consistent stacks;
            # --nonblocking reads them while they change and mixes up callers)
            cmd = pin(LOADGEN_CORE) + [
                py_spy, "record", "--pid", str(gateway_pid), "--duration", str(seconds),
                "--rate", "200", "--format", "raw", "--function", "--threads", "-o", str(raw),
            ]
            before_times, before = process_times(gateway_pid), CpuSnapshot.take(pgids)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
            after_times, cpu = process_times(gateway_pid), CpuUse.between(before, CpuSnapshot.take(pgids))
            if done.returncode != 0 or not raw.exists():
                self.notes.append(f"py-spy failed: {(done.stderr or done.stdout).strip()[-300:]}")
                return None
        finally:
            load.wait(timeout=seconds + 30)
        if self.args.keep_profile:
            shutil.copy(raw, self.args.keep_profile)
        summary = summarise_profile(raw.read_text())
        load_out = self.procs.output("profile-load")
        rps = re.search(r"Requests/sec:\s+([\d.]+)", load_out) or re.search(r'"rps": ([\d.]+)', load_out)
        summary["upstream_moved"] = moved
        summary["rps"] = float(rps.group(1)) if rps else None
        summary["cpu"] = {
            "seconds": cpu.seconds,
            "gateway_user_pct": 100 * (after_times[0] - before_times[0]) / TICK / cpu.seconds,
            "gateway_kernel_pct": 100 * (after_times[1] - before_times[1]) / TICK / cpu.seconds,
            "upstream_pct": 100 * cpu.per_process.get("upstream", 0.0) / cpu.seconds,
            "other_pct": cpu.other_pct,
        }
        return summary


def py_spy_path() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def process_times(pid: int) -> tuple[int, int]:
    """(user, kernel) clock ticks of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0, 0
    return int(fields[11]), int(fields[12])


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def short_file(file: str) -> str:
    """py-spy already shortens paths to the import path (aiohttp/web.py); finish the job."""
    path = file.replace("\\", "/")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker.startswith("/lib") and "/" in rest else rest
    return path


def package_of(file: str) -> str:
    """The top-level package a (shortened) source file belongs to; stdlib modules say so."""
    path = short_file(file)
    if not path or path.startswith("<"):
        return "other"
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return f"{top} (stdlib)"
    return top


def summarise_profile(raw: str) -> dict:
    """Own and inclusive sample shares per function and own share per package."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    other_threads: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("thread ("):  # --threads: keep the event loop's thread
            thread = frames.pop(0)
            if not thread.endswith("MainThread"):
                other_threads[(frames[-1] if frames else thread).split(" (")[0]] += n
                continue
        if not frames:
            continue
        total += n
        leaf_func, leaf_file = frame_parts(frames[-1])
        own[(leaf_func, short_file(leaf_file))] += n
        packages[package_of(leaf_file)] += n
        seen = set()
        for frame in frames:
            key = frame_parts(frame)
            key = (key[0], short_file(key[1]))
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    gateway_inclusive = [
        (key, n) for key, n in inclusive.most_common()
        if key[1].startswith("gateway/") and key[1] not in ("gateway/cli.py", "gateway/serve.py")
    ]
    return {
        "samples": total,
        "other_threads": other_threads.most_common(5),
        "own": [(f"{func} ({file})", n / total) for (func, file), n in own.most_common(15)] if total else [],
        "packages": [(name, n / total) for name, n in packages.most_common()] if total else [],
        "gateway_inclusive": [(f"{func} ({file})", n / total) for (func, file), n in gateway_inclusive[:8]] if total else [],
    }


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def machine_info() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    def tool_version(cmd: list[str], pattern: str) -> str:
        if shutil.which(cmd[0]) is None:
            return "absent"
        with contextlib.suppress(Exception):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            match = re.search(pattern, done.stdout + done.stderr)
            if match:
                return match.group(1)
        return "unknown"

    commit = "unknown"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, timeout=5).stdout.strip() or "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "nginx": tool_version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": tool_version(["wrk", "--version"], r"wrk (\S+)"),
        "py-spy": tool_version([py_spy_path() or "py-spy", "--version"], r"py-spy (\S+)"),
        "commit": commit,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_drain(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def fmt_cpu(cpu_us: dict[str, float]) -> str:
    return " + ".join(f"{name} {us:.0f}" for name, us in cpu_us.items()) or "n/a"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


@dataclass
class Report:
    command: str
    date: str
    machine: dict
    duration: int
    connections: int
    tool: str
    pinned: bool
    policies: list[str]
    addons: list[str] | str
    throughput: list[Throughput] = field(default_factory=list)
    fixed: list[FixedRate] = field(default_factory=list)
    profile: dict | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def rps(self, target: str, page: str) -> float | None:
        for row in self.throughput:
            if row.target == target and row.page == page and row.bad == 0:
                return row.rps
        return None

    def fixed_row(self, target: str) -> FixedRate | None:
        return next((row for row in self.fixed if row.target == target), None)

    def targets(self) -> list[tuple[str, str, str]]:
        """(target, verdict, figure) for both targets."""
        out = []
        r = ratio(self.rps("gateway", "/page2k"), self.rps("nginx", "/page2k"))
        name = f"gateway req/s >= {TARGET_RPS_VS_NGINX}x nginx req/s on the 2 KB page"
        if r is None:
            out.append((name, "not measured", "nginx or gateway figure missing"))
        else:
            out.append((name, "MET" if r >= TARGET_RPS_VS_NGINX else "NOT MET", f"{r:.2f}x"))
        gw, direct = self.fixed_row("gateway"), self.fixed_row("direct")
        name = f"p99 added latency <= {TARGET_ADDED_P99_MS:g} ms at a fixed {fixed_rate_label(self)} req/s"
        if gw is None or direct is None:
            out.append((name, "not measured", ""))
        else:
            added = gw.p99_ms - direct.p99_ms
            ok = added <= TARGET_ADDED_P99_MS and gw.bad == 0 and gw.achieved_rps >= 0.95 * gw.rate
            detail = f"+{added:.2f} ms (gateway p99 {gw.p99_ms:.2f} ms, direct p99 {direct.p99_ms:.2f} ms)"
            if gw.bad:
                detail += f"; {gw.bad} non-200 answers"
            out.append((name, "MET" if ok else "NOT MET", detail))
        return out

    # -- text ---------------------------------------------------------------------

    def tables(self) -> list[str]:
        lines = [
            f"Throughput: closed loop, {self.connections} connections, {self.duration} s per cell, "
            f"load generator: {self.tool}. CPU is microseconds of CPU time per request, per process "
            "on the path (proxy + upstream); \"other jobs\" is CPU taken meanwhile by processes that "
            "are not part of the benchmark (% of one core).",
            "",
            "| page | target | req/s | p50 ms | p99 ms | CPU µs/req | busy after, s | other jobs | requests | non-200/errors |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in self.throughput:
            lines.append(
                f"| {row.page} | {row.target} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
                f"{fmt_cpu(row.cpu_us)} | {fmt_drain(row.drain_s)} | {row.other_pct:.0f}% | {row.requests:,} | {row.bad} |"
            )
        drained = [r.drain_s for r in [*self.throughput, *self.fixed] if r.drain_s]
        if drained and max(drained) >= 1:
            lines += [
                "",
                f"\"busy after\": the gateway kept working up to {max(drained):.1f} s after the load stopped, "
                "on work queued during the cell (audit records waiting to be written): it accepted requests "
                "faster than it can finish them, so a longer load would end in back-pressure. The next cell "
                "starts once it is idle, and the CPU of that catch-up counts in its CPU per request.",
            ]
        lines += [
            "",
            "Ratios of req/s, then of the proxy process's CPU per request (\"bare\" is the smallest "
            "aiohttp+uvloop proxy, a reference for what aiohttp itself costs):",
            "",
            "| page | gateway/direct | gateway/nginx | nginx/direct | gateway/bare | CPU gateway/nginx | CPU gateway/bare "
            "| gateway-lean/gateway | gateway-lean/nginx | gateway-lean/lean | lean/bare | CPU gateway-lean/lean |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for page in PAGES:
            d, g, n, b, gl, lr = (self.rps(t, page) for t in ("direct", "gateway", "nginx", "bare", "gateway-lean", "lean"))
            gw_cpu = self.cpu_of("gateway", page, "gateway")
            lines.append(
                f"| {page} | {fmt_ratio(ratio(g, d))} | {fmt_ratio(ratio(g, n))} | {fmt_ratio(ratio(n, d))} | "
                f"{fmt_ratio(ratio(g, b))} | {fmt_ratio(ratio(gw_cpu, self.cpu_of('nginx', page, 'nginx')))} | "
                f"{fmt_ratio(ratio(gw_cpu, self.cpu_of('bare', page, 'bare')))} | "
                f"{fmt_ratio(ratio(gl, g))} | {fmt_ratio(ratio(gl, n))} | {fmt_ratio(ratio(gl, lr))} | "
                f"{fmt_ratio(ratio(lr, b))} | "
                f"{fmt_ratio(ratio(self.cpu_of('gateway-lean', page, 'gateway-lean'), self.cpu_of('lean', page, 'lean')))} |"
            )
        if self.fixed:
            lines += [
                "",
                f"Added latency: open loop at a fixed {fixed_rate_label(self)} req/s on /page2k, "
                f"{self.duration} s per target (Python aiohttp generator; latency from send to last byte; "
                "\"generator lag\" is how late the generator itself sent, not counted in latency).",
                "",
                "| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs/req | busy after, s | generator lag p99 ms | other jobs | non-200 |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
            ]
            for row in self.fixed:
                lines.append(
                    f"| {row.target} | {row.achieved_rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
                    f"{row.p999_ms:.2f} | {row.max_ms:.2f} | {fmt_cpu(row.cpu_us)} | {fmt_drain(row.drain_s)} | "
                    f"{row.schedule_lag_p99_ms:.2f} | {row.other_pct:.0f}% | {row.bad} |"
                )
            gw, direct = self.fixed_row("gateway"), self.fixed_row("direct")
            if gw and direct:
                lines += [
                    "",
                    f"Added by the gateway: p50 {gw.p50_ms - direct.p50_ms:+.2f} ms, "
                    f"p99 {gw.p99_ms - direct.p99_ms:+.2f} ms.",
                ]
                if gw.p99_ms > 10 * max(gw.p50_ms, 0.1):
                    lines[-1] += (
                        f" The gateway's p99 is {gw.p99_ms / max(gw.p50_ms, 0.01):.0f}x its p50: the tail is made of "
                        "rare long waits (the event loop busy with one long piece of work, or a backlog), not "
                        "of a slower average request."
                    )
        if any(r.tool == "python" for r in self.throughput):
            lines += [
                "",
                "Note: the Python load generator saturates its own core well below what direct and nginx "
                "can serve, so their req/s (and the ratios against them) are the generator's limit, not "
                "theirs; install wrk for meaningful ratios.",
            ]
        disturbed = [r for r in [*self.throughput, *self.fixed] if r.other_pct >= DISTURBED_PCT]
        if disturbed:
            lines += [
                "",
                f"Warning: other jobs used >= {DISTURBED_PCT:.0f}% of a core during {len(disturbed)} cell(s) "
                "(shared machine); those figures are lower/slower than on a quiet machine.",
            ]
        return lines

    def cpu_of(self, target: str, page: str, process: str) -> float | None:
        for row in self.throughput:
            if row.target == target and row.page == page:
                return row.cpu_us.get(process)
        return None

    def profile_lines(self) -> list[str]:
        p = self.profile
        if not p or not p["samples"]:
            reason = "; ".join(n for n in self.notes if "py-spy" in n) or "profiling skipped"
            return [f"No profile this run ({reason})."]
        pkg = dict(p["packages"])
        cpu = p["cpu"]
        gw_cpu = self.cpu_of("gateway", "/page2k", "gateway")
        ng_cpu = self.cpu_of("nginx", "/page2k", "nginx")
        up_cpu = self.cpu_of("direct", "/page2k", "upstream")
        shares = ", ".join(f"{name} {share:.0%}" for name, share in p["packages"] if share >= 0.01)
        placement = (
            f"the upstream moved to core {LOADGEN_CORE} for this phase, so the gateway had core {SERVER_CORE} to itself"
            if p.get("upstream_moved") else "the upstream still sharing the gateway's core"
        )
        alone = f" and served {p['rps']:,.0f} req/s" if p.get("rps") else ""
        lines = [
            f"py-spy {self.machine.get('py-spy')} sampled the gateway for {cpu['seconds']:.0f} s under load on "
            f"/page2k ({placement}; `py-spy record --rate 200 --function --threads --format raw`, main thread, "
            f"{p['samples']:,} samples of busy stacks). Meanwhile the gateway used "
            f"{cpu['gateway_user_pct']:.0f}% of a core in user space and {cpu['gateway_kernel_pct']:.0f}% in "
            f"the kernel{alone}; other jobs took {cpu['other_pct']:.0f}% of a core.",
            "",
        ]
        bare_cpu = self.cpu_of("bare", "/page2k", "bare")
        if gw_cpu:
            parts = [f"Per 2 KB request the gateway costs {gw_cpu:.0f} µs of CPU"]
            if bare_cpu:
                parts.append(f"the bare aiohttp proxy {bare_cpu:.0f} µs")
            if ng_cpu:
                parts.append(f"nginx {ng_cpu:.0f} µs")
            if up_cpu:
                parts.append(f"and the upstream {up_cpu:.0f} µs to serve it directly")
            text = ", ".join(parts) + ". With the upstream on the same core, req/s is about 1 s / (proxy + upstream CPU per request)"
            if bare_cpu and gw_cpu > bare_cpu:
                text += (
                    f": aiohttp's own client+server round trip is {bare_cpu / gw_cpu:.0%} of the gateway's cost, "
                    f"the gateway's extra work (its addons: guards, audit, metrics; header hygiene, canonical path, relay) the other "
                    f"{1 - bare_cpu / gw_cpu:.0%}"
                )
            if ng_cpu:
                budget = (ng_cpu + (self.cpu_of("nginx", "/page2k", "upstream") or 0)) / TARGET_RPS_VS_NGINX
                upstream_behind = self.cpu_of("gateway", "/page2k", "upstream") or up_cpu or 0
                text += (
                    f". Reaching {TARGET_RPS_VS_NGINX}x nginx's req/s leaves {budget:.0f} µs per request for gateway "
                    f"and upstream together, so at most ~{budget - upstream_behind:.0f} µs for the gateway "
                    f"(the upstream costs {upstream_behind:.0f} µs per request behind it)"
                )
            lines += [text + ".", ""]
        lines += [
            f"Own time by package (share of busy samples): {shares}. "
            f"aiohttp (server and client side) {pkg.get('aiohttp', 0.0):.0%}, the gateway's own code "
            f"{pkg.get('gateway', 0.0):.0%}. Samples whose innermost Python frame is the event loop "
            "(`Runner.run`) are uvloop's and aiohttp's C code (socket reads, the C HTTP parser, callbacks); "
            "`StreamWriter._write` is the `send()` system call: on loopback the kernel delivers the bytes "
            "to the receiver inside that call"
            + ("." if p.get("upstream_moved") else
               ", and a sample there also covers the moments the gateway waits for the core while the "
               "upstream it just woke runs."),
            "",
            "Top functions by own time:",
            "",
            "| own | function (file) |",
            "| ---: | --- |",
        ]
        lines += [f"| {share:.1%} | `{name}` |" for name, share in p["own"]]
        if p.get("other_threads"):
            busy = sum(n for _, n in p["other_threads"])
            names = ", ".join(f"`{name}` {n}" for name, n in p["other_threads"])
            lines += ["", f"Other threads of the gateway had {busy} busy samples (not counted above): {names}."]
        if p["gateway_inclusive"]:
            lines += [
                "",
                "Gateway functions by inclusive time (own + what they call):",
                "",
                "| inclusive | function (file) |",
                "| ---: | --- |",
            ]
            lines += [f"| {share:.1%} | `{name}` |" for name, share in p["gateway_inclusive"]]
        return lines

    def markdown(self) -> str:
        m = self.machine
        addons = ", ".join(a.rsplit(".", 1)[-1] for a in self.addons) if isinstance(self.addons, list) and self.addons else (
            "none (build_addons returned no addon: the bare proxy path)" if isinstance(self.addons, list) else self.addons
        )
        lines = [
            "## proxy: gateway vs. direct upstream vs. nginx",
            "",
            f"- Date: {self.date}",
            f"- Command: `{self.command}`",
            f"- Machine: {m['nproc']} cores ({m['cpu']}), Linux {m['kernel']}; Python {m['python']}, "
            f"aiohttp {m['aiohttp']}, uvloop {m['uvloop']}; nginx {m['nginx']}, wrk {m['wrk']}; commit {m['commit']}",
            "- Placement: "
            + (
                f"upstream, gateway and nginx pinned to core {SERVER_CORE}; load generators pinned to core {LOADGEN_CORE}."
                if self.pinned
                else "not pinned (taskset missing or fewer than 2 cores): figures are noisier."
            ),
            f"- Gateway: one worker, policy files {', '.join(self.policies)}; active addons: {addons}.",
        ]
        lines += [f"- Note: {note}" for note in self.notes]
        lines += ["", *self.tables(), "", "### Targets", ""]
        for name, verdict, figure in self.targets():
            lines.append(f"- {name}: **{verdict}**" + (f" ({figure})" if figure else ""))
        lines += ["", "### What limits it", "", *self.profile_lines()]
        return "\n".join(lines) + "\n"


def fixed_rate_label(report: Report) -> str:
    rate = report.fixed[0].rate if report.fixed else 1000
    return f"{rate:,.0f}"


def write_results(section: str, results: Path = RESULTS) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving every other section as it is."""
    block = f"{START_MARK}\n{section}{END_MARK}"
    text = results.read_text() if results.exists() else "# Benchmark results\n\nWritten by the scripts in bench/; see bench/README.md.\n"
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start != -1 and end != -1 and end > start:
        text = text[:start] + block + text[end + len(END_MARK):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = results.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, results)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--write", action="store_true", help="replace the proxy section of bench/RESULTS.md")
    parser.add_argument("--smoke", action="store_true",
                        help="1 s per measurement, no warm-up, no profile, no writing; exit 0 when every target answered 200")
    parser.add_argument("--connections", type=int, default=50, help="closed-loop connections (default 50)")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed rate of the added-latency run (default 1000)")
    parser.add_argument("--profile-seconds", type=int, default=10, help="py-spy sampling time (0: no profile)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="closed-loop load generator: wrk when installed (auto), or the Python one")
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx even when installed")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before measuring, wait up to this long for other jobs to leave the machine idle")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    parser.add_argument("--keep-profile", type=Path, help="copy py-spy's raw (collapsed) stacks to this file")
    # helper roles, started by the benchmark itself
    parser.add_argument("--role", choices=("upstream", "bare", "lean", "closed", "open", "addons"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.write, args.profile_seconds = 1, False, 0
    if args.duration < 1:
        parser.error("--duration is at least 1 second")
    return args


def run_role(args: argparse.Namespace) -> int:
    if args.role == "upstream":
        role_upstream(args.port)
    elif args.role == "bare":
        role_bare(args.port, args.url)
    elif args.role == "lean":
        role_lean(args.port, args.url)
    elif args.role == "closed":
        role_closed(args.url, args.connections, args.seconds, args.warmup)
    elif args.role == "open":
        role_open(args.url, args.rate, args.seconds, args.warmup)
    elif args.role == "addons":
        role_addons(args.config)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.role:
        return run_role(args)

    # SIGTERM ends the run like Ctrl+C does: through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    procs = Processes(workdir)
    bench = Bench(args, workdir, procs)
    warmup = 0.0 if args.smoke else 1.0
    command = shlex.join([".venv/bin/python", "bench/proxy_bench.py", *argv])
    try:
        bench.start_all()
        report = Report(
            command=command,
            date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine_info(),
            duration=args.duration,
            connections=args.connections,
            tool=f"wrk -t1 -c{args.connections} --latency" if bench.use_wrk else
            f"Python closed-loop generator (aiohttp client, {args.connections} connections; wrk not used)",
            pinned=can_pin(),
            policies=[str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in bench.policies],
            addons=bench.addons,
        )
        report.problems = bench.check_pages()
        if report.problems:
            for problem in report.problems:
                bench.log(f"not answering 200: {problem}")
            return 1
        retries = [0 if args.smoke else MAX_RETRIES]

        def measure(label: str, run):
            """One cell; measured again (once) when other jobs took a core's share meanwhile."""
            bench.log(f"{label} ({args.duration} s)")
            bench.wait_quiet()
            row = run()
            if row.other_pct >= DISTURBED_PCT and retries[0] > 0:
                retries[0] -= 1
                bench.log(f"  other jobs used {row.other_pct:.0f}% of a core meanwhile: measuring again")
                bench.wait_quiet()
                again = run()
                row = again if again.other_pct < row.other_pct else row
            return row

        for page in PAGES:
            for target in TARGETS:
                if target not in bench.urls or (target in ("bare", "lean") and page not in BARE_PAGES):
                    continue
                row = measure(f"closed loop: {target} {page}",
                              lambda: bench.closed_loop(target, page, args.duration, warmup))
                report.throughput.append(row)
                if row.bad:
                    report.problems.append(f"{target}{page}: {row.bad} non-200 answers or socket errors {row.detail}")
        if args.smoke and bench.use_wrk:
            # keep the fallback generator from rotting: one short cell through the gateway
            bench.use_wrk = False
            row = bench.closed_loop("gateway", "/page2k", 1, 0)
            bench.use_wrk = True
            print(f"python load generator check: gateway /page2k {row.rps:,.0f} req/s, {row.bad} non-200")
            if row.bad or not row.requests:
                report.problems.append(f"python load generator: {row.requests} requests, {row.bad} non-200 {row.detail}")
        for target in ("direct", "gateway", "gateway-lean"):
            row = measure(f"fixed rate: {target} /page2k at {args.rate:g} req/s",
                          lambda: bench.fixed_rate(target, "/page2k", args.duration, warmup))
            report.fixed.append(row)
            if row.bad:
                report.problems.append(f"{target} fixed rate: {row.bad} non-200 answers")
        if args.profile_seconds > 0:
            bench.log(f"profiling the gateway with py-spy ({args.profile_seconds} s)")
            bench.wait_quiet()
            report.profile = bench.profile(args.profile_seconds)
        report.notes = bench.notes
        section = report.markdown()
        print(section)
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        if args.json:
            args.json.write_text(json.dumps(
                {"throughput": [asdict(r) for r in report.throughput], "fixed": [asdict(r) for r in report.fixed],
                 "profile": report.profile, "machine": report.machine, "addons": report.addons,
                 "targets": report.targets(), "problems": report.problems}, indent=2))
        if args.write:
            write_results(section)
            bench.log(f"wrote the proxy section of {RESULTS.relative_to(ROOT)}")
        bench.log(f"done in {time.monotonic() - started:.0f} s")
        return 1 if report.problems else 0
    except KeyboardInterrupt:
        bench.log("interrupted")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
