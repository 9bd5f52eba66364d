#!/usr/bin/env python3
"""Proxy benchmark: the gateway against the bare upstream and against nginx, in one run.

    .venv/bin/python bench/proxy_bench.py [--duration 8] [--write]      # make bench
    .venv/bin/python bench/proxy_bench.py --soak MINUTES | --stream     # make bench-soak, bench-stream

Starts a minimal upstream (bench_upstream.py: the pages, and a login form the default
policy's login rule fits), the gateways (`pms-gateway run`: the default lean engine, the
aiohttp engine, and two workers; sessions in Redis, audit in PostgreSQL: bench_stores.py),
nginx (when installed) and two reference relays; signs one user in to each gateway with
password and TOTP (bench_session.py); drives every target with wrk (or a Python load
generator) as that user; counts the gateway's audit records per cell; measures the latency
the gateway adds at a fixed 1,000 req/s with an open-loop generator; profiles the gateway
under load with py-spy; prints the figures, the ratios and issue 14's goals
(proxy_report.py, bench_goals.py), and with --write replaces the `proxy` section of
bench/RESULTS.md and README's benchmark summary. See bench/README.md for what each
figure means, and bench_layout.py for what is measured where.

The same file also holds the helper processes it starts (`--role upstream|bare|lean|
closed|open|addons`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules beside this file

from bench_layout import (  # noqa: E402
    ALIASES, AUDIT_WAIT, CLOSED_CELLS, DISTURBED_PCT, FIXED_TARGETS, GATEWAY_SPECS, GATEWAYS, LOADGEN_CORE,
    MAX_RETRIES, ON_PATH, SERVER_CORE, SETTLE_BUDGET, SETTLE_LIMIT, SMOKE_SKIPS, WORKER_CELLS, WORKER_TARGETS,
    GatewaySpec, process_of,
)
from bench_session import SignInError, invite_code, refuses_anonymous, sign_in, start_invite  # noqa: E402
from bench_stores import REDIS_URL, BenchStores, StoreError  # noqa: E402
from bench_processes import (  # noqa: E402
    TICK, CpuSnapshot, CpuUse, Processes, can_pin, free_port, group_pids, group_ticks, http_get, pin, process_times,
    wait_ready,
)
from bench_profile import machine_info, py_spy_path, summarise_profile  # noqa: E402
from bench_results import RESULTS, write_readme_summary, write_results  # noqa: E402
from bench_roles import cookie_headers, role_addons, role_bare, role_closed, role_lean, role_open  # noqa: E402
from bench_upstream import BENCH_PASSWORD, PAGES, role_upstream  # noqa: E402
from proxy_report import Report  # noqa: E402

BENCH_POLICY = ROOT / "bench" / "proxy_bench_policy.yaml"
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "pms-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def write_gateway_config(workdir: Path, name: str, port: int, upstream_port: int, policies: list[Path],
                         spec: GatewaySpec, stores: BenchStores) -> Path:
    """The config of one gateway of the run: its own port, data dir and audit instance;
    the run's Redis prefix, database and key file, shared with the others."""
    import yaml

    config = {
        "listen": {"host": "127.0.0.1", "port": port, "engine": spec.engine, "workers": spec.workers},
        "public_urls": [f"http://127.0.0.1:{port}"],
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
        "data_dir": str(workdir / f"{name}-data"),
        "policy_paths": [str(p) for p in policies],
        "store_url": stores.store_url,
        "database_url": stores.database_url,
        "key_file": str(stores.key_file),
        "instance_id": spec.instance,
        "admin": {"enabled": False},
        "log": {"level": "warning"},
    }
    stores.share_audit_key(workdir / f"{name}-data")
    path = workdir / f"config-{name}.yaml"
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
    audit: AuditCount | None = None  # gateway targets: what its audit writer stored meanwhile


@dataclass
class AuditCount:
    """The audit records a gateway stored for one cell, counted in its chain heads."""

    during_load: int  # stored between the start and the end of the load
    after_load: int  # stored in all for the cell, once caught up (or when waiting gave up)
    catch_up_s: float  # from the end of the load until every served request had its record
    caught_up: bool
    statuses: dict[str, int]  # "status decision" -> records, for the cell


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
    detail: str = ""  # the answers by status (and a gateway's own records of them) when some were not 200


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
    total = re.search(r"^\s+(\d+) requests in [^,]+, ([\d.]+)([KMGT]?B) read", output, re.M)
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
        "bytes": float(total.group(2)) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[total.group(3)],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: Processes, stores: BenchStores) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = procs
        self.stores = stores
        self.use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
        self.use_nginx = not args.no_nginx and shutil.which("nginx") is not None
        self.urls: dict[str, str] = {}
        self.pgids: dict[str, int] = {}  # server process groups by name, for CPU accounting
        self.cookies: dict[str, str] = {}  # gateway process -> its signed-in user's Cookie header
        self.addons: list[str] | str = "unknown"
        self.policies: list[Path] = []
        self.notes: list[str] = []
        self.settle_budget = 5.0 if args.smoke else SETTLE_BUDGET
        self.quiet_budget = args.wait_quiet
        self.drained_cpu = 0.0
        self.upstream_port = 0
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] {message}", file=sys.stderr, flush=True)

    def helper(self, *role_args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *role_args]

    # -- start ----------------------------------------------------------------------

    def start_all(self, gateways: tuple[str, ...] = tuple(GATEWAY_SPECS), references: bool = True) -> None:
        self.log("starting the upstream, the gateways and the references")
        self.start_upstream()
        self.policies = ([DEFAULT_POLICY] if DEFAULT_POLICY.exists() else []) + [BENCH_POLICY]
        # the first gateway creates the database schema alone; then the others, the addon
        # probe and each gateway's user invitation (the operator's command) start together
        self.start_gateways(gateways[:1])
        probe = self.start_addon_probe()
        invites = {name: start_invite(gateway_command(), self.workdir / f"config-{name}.yaml",
                                      GATEWAY_SPECS[name].user, ROOT) for name in gateways[:1]}
        self.start_gateways(gateways[1:], then=lambda name: invites.update({name: start_invite(
            gateway_command(), self.workdir / f"config-{name}.yaml", GATEWAY_SPECS[name].user, ROOT)}))
        self.addons = self.finish_addon_probe(probe)
        self.log("signing in one user per gateway (invite, password, TOTP)")
        for name in gateways:
            code = invite_code(invites[name], GATEWAY_SPECS[name].user)
            self.cookies[name] = sign_in(self.urls[name], GATEWAY_SPECS[name].user, BENCH_PASSWORD, code)
        for alias, name in ALIASES.items():
            if name in self.cookies:
                self.cookies[alias] = self.cookies[name]
        if references:
            self.start_references()

    def start_upstream(self) -> None:
        self.upstream_port = free_port()
        proc = self.procs.start(
            "upstream", pin(SERVER_CORE) + self.helper("--role", "upstream", "--port", str(self.upstream_port))
        )
        self.urls["direct"] = f"http://127.0.0.1:{self.upstream_port}"
        wait_ready(self.urls["direct"] + "/page2k", proc, self.procs, "upstream")
        self.pgids["upstream"] = proc.pid

    def start_gateways(self, names: tuple[str, ...], then=lambda name: None) -> None:
        """`pms-gateway run` for each, all started before waiting for any; `then(name)`
        once each config is written."""
        started = []
        for name in names:
            spec, port = GATEWAY_SPECS[name], free_port()
            config = write_gateway_config(self.workdir, name, port, self.upstream_port, self.policies, spec,
                                          self.stores)
            where = pin(SERVER_CORE) if spec.pinned else []
            proc = self.procs.start(name, where + gateway_command() + ["run", "--config", str(config)], cwd=ROOT)
            self.urls[name] = f"http://127.0.0.1:{port}"
            started.append((name, proc))
            then(name)
        for name, proc in started:
            wait_ready(self.urls[name] + "/_gateway/health", proc, self.procs, name, timeout=60)
            self.pgids[name] = proc.pid
        for alias, name in ALIASES.items():
            if name in self.urls:
                self.urls[alias] = self.urls[name]

    def start_references(self) -> None:
        """The lean relay (Python ceiling), the bare aiohttp proxy and nginx."""
        for name in ("lean", "bare"):
            port = free_port()
            proc = self.procs.start(
                name, pin(SERVER_CORE) + self.helper("--role", name, "--port", str(port), "--url", self.urls["direct"])
            )
            self.urls[name] = f"http://127.0.0.1:{port}"
            wait_ready(self.urls[name] + "/page2k", proc, self.procs, name)
            self.pgids[name] = proc.pid
        if not self.use_nginx:
            self.notes.append("nginx not installed (or --no-nginx): nginx column skipped")
            return
        port = free_port()
        conf = nginx_config(self.workdir, port, self.upstream_port)
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

    def start_addon_probe(self) -> subprocess.Popen:
        """Ask `build_addons` which addons `run` builds for the bench config (own data dir
        and audit instance), in a process of its own while the gateways start."""
        spec = GatewaySpec("lean", 1, True, "pb-probe", "")
        config = write_gateway_config(self.workdir, "probe", free_port(), self.upstream_port, self.policies, spec,
                                      self.stores)
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
        """Every target answers 200 with the full page before anything is measured, and a
        gateway's pages are refused without its user's cookies (so each gateway request
        measured is a signed-in one)."""
        problems = []
        for target, base in self.urls.items():
            if target in ALIASES:
                continue
            headers = cookie_headers(self.cookies.get(target))
            for page, size in PAGES.items():
                try:
                    status, body = http_get(base + page, timeout=5, headers=headers)
                except OSError as exc:
                    problems.append(f"{target}{page}: {exc}")
                    continue
                # a signed-in page carries the gateway's small injected block (account link, notices)
                fits = size <= len(body) <= size + 4096 if target in self.cookies else len(body) == size
                if status != 200 or not fits:
                    problems.append(f"{target}{page}: HTTP {status}, {len(body)} bytes (expected 200, {size})")
            if target in self.cookies:
                wrong = refuses_anonymous(base + "/page2k", self.cookies[target])
                if wrong:
                    problems.append(f"{target}: {wrong}")
        return problems

    # -- load ---------------------------------------------------------------------

    def placement(self, target: str) -> list[str]:
        """Where a load generator runs: on its own core, or free on every core for the
        workers comparison (where the gateway's workers need both)."""
        return [] if target in WORKER_TARGETS else pin(LOADGEN_CORE)

    def wrk_command(self, target: str, url: str, seconds: float, latency: bool) -> list[str]:
        """wrk on the load generator's core (free on every core in the workers comparison);
        a gateway target's cookies come from a wrk script, so they stay off the command line."""
        cmd = self.placement(target) + ["wrk", "-t1", f"-c{self.args.connections}", f"-d{max(1, round(seconds))}s"]
        if target in self.cookies:
            script = self.workdir / f"cookie-{process_of(target)}.lua"
            if not script.exists():
                script.touch(0o600)
                script.write_text(f"wrk.headers[\"Cookie\"] = {json.dumps(self.cookies[target])}\n")
            cmd += ["-s", str(script)]
        return cmd + (["--latency"] if latency else []) + [url]

    def python_load(self, role: str, target: str, url: str, seconds: float, warmup: float, *extra: str) -> str:
        """A Python generator role; a gateway target's cookies go in its environment."""
        cmd = self.placement(target) + self.helper("--role", role, "--url", url, "--seconds", str(seconds), "--warmup", str(warmup), *extra)
        env = {**os.environ, "BENCH_COOKIE": self.cookies.get(target, "")}
        return self.run(cmd, seconds + warmup + 30, env=env)

    def closed_loop(self, target: str, page: str, duration: int, warmup: float) -> Throughput:
        url = self.urls[target] + page
        gateway = target in GATEWAYS
        if self.use_wrk and warmup > 0:
            self.run(self.wrk_command(target, url, warmup, latency=False), duration + 30)
        if gateway and warmup > 0:
            self.settle(process_of(target))  # the warm-up's records are not the cell's
        if gateway:
            heads = self.stores.heads(GATEWAY_SPECS[process_of(target)].instance)
        before = CpuSnapshot.take(self.pgids)
        if self.use_wrk:
            out = self.run(self.wrk_command(target, url, duration, latency=True), duration + 30)
            cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
            figures = parse_wrk(out)
            # wrk prints the bytes it read to 3 significant digits: a redirect is far shorter than that
            short = figures["requests"] and figures["bytes"] / figures["requests"] < 0.95 * PAGES[page]
            bad = figures["non2xx"] + figures["errors"]
            row = Throughput(target, page, "wrk", figures["rps"], figures["p50_ms"], figures["p99_ms"],
                             figures["requests"], bad)
            if short:  # wrk counts a 3xx (a redirect to the login) as a success: the size does not
                row.bad += 1
                row.detail = f"{figures['bytes'] / figures['requests']:.0f} bytes read per answer, less than the page"
            served = figures["requests"]
        else:
            out = self.python_load("closed", target, url, duration, warmup, "--connections", str(self.args.connections))
            figures = json.loads(out.strip().splitlines()[-1])
            cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
            bad = sum(n for status, n in figures["statuses"].items() if status != "200")
            row = Throughput(target, page, "python", figures["rps"], figures["p50_ms"], figures["p99_ms"],
                             figures["requests"], bad, json.dumps(figures["statuses"]))
            served = figures["requests"] + figures["warmup_requests"]
        if gateway:
            row.audit = self.audit_count(target, heads, served)
            refused = sum(n for status, n in row.audit.statuses.items() if not status.startswith("200 "))
            if refused:  # the gateway's own account of what it answered
                row.bad = max(row.bad, refused)
                row.detail = (row.detail + " " if row.detail else "") + f"audit: {row.audit.statuses}"
        self.account(row, target, cpu, served)
        return row

    def audit_count(self, target: str, heads: dict[str, int], served: int) -> AuditCount:
        """How many records the gateway stored while the load ran, and how long after it
        every served request had its record (polled in the chain heads)."""
        instance = GATEWAY_SPECS[process_of(target)].instance
        start = sum(heads.values())
        during = self.stores.stored(instance) - start
        ended = time.monotonic()
        stored = during
        while stored < served and time.monotonic() - ended < AUDIT_WAIT:
            time.sleep(0.05)
            stored = self.stores.stored(instance) - start
        catch_up = time.monotonic() - ended if stored > during else 0.0
        return AuditCount(during, stored, catch_up, stored >= served, dict(self.stores.statuses(instance, heads)))

    def fixed_rate(self, target: str, page: str, duration: int, warmup: float) -> FixedRate:
        url = self.urls[target] + page
        instance = GATEWAY_SPECS[process_of(target)].instance if target in GATEWAYS else None
        heads = self.stores.heads(instance) if instance else {}
        before = CpuSnapshot.take(self.pgids)
        out = self.python_load("open", target, url, duration, warmup, "--rate", str(self.args.rate))
        figures = json.loads(out.strip().splitlines()[-1])
        cpu = CpuUse.between(before, CpuSnapshot.take(self.pgids))
        bad = sum(n for status, n in figures["statuses"].items() if status != "200")
        row = FixedRate(target, self.args.rate, figures["achieved_rps"], figures["requests"], figures["p50_ms"],
                        figures["p99_ms"], figures["p999_ms"], figures["max_ms"], figures["schedule_lag_p99_ms"], bad)
        self.account(row, target, cpu, figures["requests"] + figures["warmup_requests"])
        if bad:
            row.detail = f"answers {json.dumps(figures['statuses'])}"
            if instance:  # settled in account(): the gateway's records of the cell are all stored
                row.detail += f"; its audit records {json.dumps(dict(self.stores.statuses(instance, heads)))}"
        return row

    def account(self, row: Throughput | FixedRate, target: str, cpu: CpuUse, served: int) -> None:
        row.other_pct = cpu.other_pct
        process = process_of(target)
        if target in GATEWAYS:
            row.drain_s = self.settle(process)
        if served:
            # the gateway's work left over when the load stopped (drained in settle) belongs to the cell
            extra = self.drained_cpu if target in GATEWAYS else 0.0
            row.cpu_us = {
                name: (cpu.per_process.get(name, 0.0) + (extra if name == process else 0.0)) * 1e6 / served
                for name in ON_PATH[target]
            }

    def spread(self, spread: bool) -> None:
        """The workers comparison's placement (spread=True): the upstream and every process
        of the one-worker gateway free on every core, as the two-worker gateway and the
        generator are; else back on SERVER_CORE."""
        cores = ",".join(str(c) for c in range(os.cpu_count() or 1)) if spread else str(SERVER_CORE)
        if can_pin():
            for name in ("upstream", "gateway"):
                for pid in group_pids(self.pgids[name]):
                    subprocess.run(["taskset", "-a", "-p", "-c", cores, str(pid)], capture_output=True)

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

    def run(self, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
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
        env = None
        if self.use_wrk:
            load_cmd = self.wrk_command("gateway", url, seconds + 3, latency=False)
        else:
            load_cmd = pin(LOADGEN_CORE) + self.helper(
                "--role", "closed", "--url", url, "--connections", str(self.args.connections),
                "--seconds", str(seconds + 3), "--warmup", "0",
            )
            env = {**os.environ, "BENCH_COOKIE": self.cookies["gateway"]}
        raw = self.workdir / "gateway-profile.txt"
        self.settle("gateway")
        # The upstream moves to the load generator's core for this last phase: the gateway
        # then has core 1 to itself, so a sample in a send() is the send and not the gateway
        # waiting for the core while the upstream it just woke runs.
        moved = can_pin() and subprocess.run(
            ["taskset", "-a", "-p", "-c", str(LOADGEN_CORE), str(self.pgids["upstream"])], capture_output=True
        ).returncode == 0
        load = self.procs.start("profile-load", load_cmd, env=env)
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


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement (default 8: about 4 minutes in all)")
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
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy every started process's output to DIR")
    parser.add_argument("--soak", type=float, metavar="MINUTES",
                        help="instead: load the gateway at half its measured capacity for MINUTES; RSS after 1 min vs at the end")
    parser.add_argument("--stream", action="store_true",
                        help="instead: 1 GiB up and 1 GiB down through the gateway; its peak RSS during each")
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
    if args.soak is not None and args.soak <= 0:
        parser.error("--soak is a number of minutes above 0")
    return args


def run_role(args: argparse.Namespace) -> int:
    if args.role == "upstream":
        role_upstream(args.port)
    elif args.role == "bare":
        role_bare(args.port, args.url)
    elif args.role == "lean":
        role_lean(args.port, args.url)
    elif args.role == "closed":
        role_closed(args.url, args.connections, args.seconds, args.warmup, os.environ.get("BENCH_COOKIE"))
    elif args.role == "open":
        role_open(args.url, args.rate, args.seconds, args.warmup, os.environ.get("BENCH_COOKIE"))
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
    stores = BenchStores(workdir)
    bench = Bench(args, workdir, procs, stores)
    command = shlex.join([".venv/bin/python", "bench/proxy_bench.py", *argv])
    try:
        stores.create()
        if args.soak or args.stream:
            from bench_long import LongRuns

            return LongRuns(bench, command, args).run()
        bench.start_all()
        code = run_proxy_bench(bench, args, command)
        bench.log(f"done in {time.monotonic() - started:.0f} s")
        return code
    except (StoreError, SignInError) as exc:
        bench.log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        bench.log("interrupted")
        return 130
    finally:
        procs.stop_all()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for out in workdir.glob("*.out"):
                shutil.copy(out, args.keep_logs / out.name)
        stores.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def run_proxy_bench(bench: Bench, args: argparse.Namespace, command: str) -> int:
    """Every cell of `make bench`, then the report (and with --write, RESULTS.md and README)."""
    warmup = 0.0 if args.smoke else 1.0
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
        stores=(f"sessions in Redis ({REDIS_URL}, key prefix `{bench.stores.prefix}`); audit trail and accounts in "
                "PostgreSQL (the production path of docker-compose.yml and README's \"Several hosts\"; a database "
                f"of the run's own, `{bench.stores.database}`, dropped afterwards), durability `normal`; one key "
                "file for every gateway of the run, each gateway its own audit instance."),
    )
    report.problems = bench.check_pages()
    if report.problems:
        for problem in report.problems:
            bench.log(f"not answering as expected: {problem}")
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

    def closed(page: str, target: str) -> None:
        row = measure(f"closed loop: {target} {page}", lambda: bench.closed_loop(target, page, args.duration, warmup))
        report.throughput.append(row)
        if row.bad:
            report.problems.append(f"{target}{page}: {row.bad} non-200 answers or socket errors {row.detail}")

    for page, target in CLOSED_CELLS:
        if target in bench.urls and not (args.smoke and (page, target) in SMOKE_SKIPS):
            closed(page, target)
    bench.spread(True)
    try:
        for page, target in WORKER_CELLS:
            if not (args.smoke and (page, target) in SMOKE_SKIPS):
                closed(page, target)
    finally:
        bench.spread(False)
    if args.smoke and bench.use_wrk:
        # keep the fallback generator from rotting: one short cell through the gateway
        bench.use_wrk = False
        row = bench.closed_loop("gateway", "/page2k", 1, 0)
        bench.use_wrk = True
        print(f"python load generator check: gateway /page2k {row.rps:,.0f} req/s, {row.bad} non-200")
        if row.bad or not row.requests:
            report.problems.append(f"python load generator: {row.requests} requests, {row.bad} non-200 {row.detail}")
    for target in ("gateway",) if args.smoke else FIXED_TARGETS:
        row = measure(f"fixed rate: {target} /page2k at {args.rate:g} req/s",
                      lambda: bench.fixed_rate(target, "/page2k", args.duration, warmup))
        report.fixed.append(row)
        if row.bad:
            report.problems.append(f"{target} fixed rate: {row.bad} non-200 answers: {row.detail}")
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
             "goals": report.goals(), "problems": report.problems}, indent=2))
    if args.write:
        write_results(section)
        bench.log(f"wrote the proxy section of {RESULTS.relative_to(ROOT)}")
        if write_readme_summary(report.summary()):
            bench.log("wrote the benchmark summary in README.md")
        else:
            bench.log("README.md has no proxy-bench-summary markers: summary not written")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
