"""The proxy benchmark's long modes: memory under a soak, and while streaming 1 GiB.

    .venv/bin/python bench/proxy_bench.py --soak 10 [--write]     # make bench-soak
    .venv/bin/python bench/proxy_bench.py --stream [--write]      # make bench-stream

Both start the upstream and the default gateway (lean engine, one worker, sessions in
Redis, audit in PostgreSQL, as `make bench` does) and sign a user in; every request is
that user's. Neither is part of `make bench`: a soak takes its minutes, a stream moves
2 GiB.

- Soak: the gateway's capacity is measured first (closed loop, wrk, /page2k), then an
  open-loop generator holds half of it for MINUTES while the resident memory (RSS) of the
  gateway's processes is read every 5 s. The goal: RSS at the end within 10 % of RSS
  after the first minute (the first minute fills caches and pools; growth after it is
  a leak). The audit records stored are counted against the requests served.
- Stream: one 1 GiB upload (POST, Content-Length) and one 1 GiB download through the
  gateway, RSS read every 50 ms during each. The goal: the peak stays within
  FLAT_MIB of the RSS before the transfer (a gateway that buffered the body would grow
  by the body's size).

With --write each mode replaces its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_results import RESULTS, memory_summary, write_readme_memory, write_results

SOAK_MARKS = ("<!-- proxy-soak:start -->", "<!-- proxy-soak:end -->")
STREAM_MARKS = ("<!-- proxy-stream:start -->", "<!-- proxy-stream:end -->")
STREAM_BYTES = 1 << 30
CHUNK = 1 << 20
FLAT_MIB = 64.0
SOAK_TOLERANCE = 0.10
SOAK_SAMPLE_S = 5.0


def group_rss_kib(pgid: int) -> tuple[int, int]:
    """(RSS of the group's leader, RSS of every process in the group) in KiB."""
    leader = total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
            if int(stat[2]) != pgid:
                continue
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        total += rss
        if int(entry.name) == pgid:
            leader = rss
    return leader, total


@dataclass
class RssSampler:
    """Reads a process group's RSS in a thread every `interval` s until stopped."""

    pgid: int
    interval: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s since start, leader KiB, group KiB)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._started, *group_rss_kib(self.pgid)))
            if self._stop.wait(self.interval):
                return

    def peak(self) -> tuple[int, int]:
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


class LongRuns:
    """--soak and --stream, on a Bench whose stores exist (proxy_bench.main made them)."""

    def __init__(self, bench, command: str, args) -> None:
        self.bench = bench
        self.command = command
        self.args = args

    def run(self) -> int:
        bench = self.bench
        bench.start_all(gateways=("gateway",), references=False)
        problems = bench.check_pages()
        for problem in problems:
            bench.log(f"not answering as expected: {problem}")
        if problems:
            return 1
        ok = True
        if self.args.stream:
            section, passed = self.stream()
            ok &= passed
            self.emit(section, STREAM_MARKS, "stream")
        if self.args.soak:
            section, passed = self.soak(self.args.soak)
            ok &= passed
            self.emit(section, SOAK_MARKS, "soak")
        return 0 if ok else 1

    def emit(self, section: str, marks: tuple[str, str], name: str) -> None:
        print(section)
        if self.args.write:
            write_results(section, start=marks[0], end=marks[1])
            self.bench.log(f"wrote the {name} section of bench/RESULTS.md")
            if write_readme_memory(memory_summary(RESULTS.read_text(), SOAK_MARKS, STREAM_MARKS)):
                self.bench.log("wrote the memory lines of README's benchmark summary")

    def header(self, title: str) -> list[str]:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return [f"## {title}", "", f"- Date: {stamp}", f"- Command: `{self.command}`",
                f"- Gateway: the default engine (lean), one worker, every addon of policies/default.yaml; a signed-in "
                f"user's requests; sessions in Redis, audit in PostgreSQL (as `make bench`); {os.cpu_count()} cores.", ""]

    # -- soak -----------------------------------------------------------------------

    def soak(self, minutes: float) -> tuple[str, bool]:
        bench = self.bench
        bench.log("soak: measuring the gateway's capacity (closed loop, /page2k, 5 s)")
        capacity = bench.closed_loop("gateway", "/page2k", 5, 1.0)
        rate = max(1.0, capacity.rps / 2)
        seconds = minutes * 60
        instance = "pb-lean"
        heads = bench.stores.heads(instance)
        stored_before = sum(heads.values())
        bench.log(f"soak: {rate:,.0f} req/s (half of {capacity.rps:,.0f}) for {minutes:g} min")
        url = bench.urls["gateway"] + "/page2k"
        cmd = bench.placement("gateway") + bench.helper("--role", "open", "--url", url, "--rate", f"{rate:.0f}", "--seconds", str(seconds),
                           "--warmup", "0")
        load = bench.procs.start("soak-load", cmd, env={**os.environ, "BENCH_COOKIE": bench.cookies["gateway"]})
        with RssSampler(bench.pgids["gateway"], SOAK_SAMPLE_S) as sampler:
            load.wait(timeout=seconds + 120)
        figures = json.loads(bench.procs.output("soak-load").strip().splitlines()[-1])
        bench.settle("gateway")
        stored = bench.stores.stored(instance) - stored_before
        audited = ", ".join(f"{k}: {v:,}" for k, v in sorted(bench.stores.statuses(instance, heads).items()))
        samples = [s for s in sampler.samples if s[0] <= seconds]
        after_minute = next((s for s in samples if s[0] >= 60), samples[-1])
        end = samples[-1]
        growth = (end[2] - after_minute[2]) / after_minute[2] if after_minute[2] else 0.0
        non200 = sum(n for status, n in figures["statuses"].items() if status != "200")
        answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(figures["statuses"].items()))
        flat = abs(growth) <= SOAK_TOLERANCE
        lines = self.header(f"proxy soak: {minutes:g} min at half of the gateway's capacity")
        lines += [
            f"Capacity first measured: {capacity.rps:,.0f} req/s (wrk, 5 s, /page2k); soak at {rate:,.0f} req/s "
            f"(open loop, Python generator) for {minutes:g} min: {figures['achieved_rps']:,.0f} req/s achieved, "
            f"{figures['requests']:,} requests ({answers}); p50 {figures['p50_ms']:.2f} ms, p99 "
            f"{figures['p99_ms']:.2f} ms, p99.9 {figures['p999_ms']:.2f} ms; generator lag p99 "
            f"{figures['schedule_lag_p99_ms']:.2f} ms. Audit records stored: {stored:,} ({audited}).",
            "",
            "| time | RSS gateway process, MiB | RSS all its processes, MiB |",
            "| ---: | ---: | ---: |",
        ]
        for sample in samples:
            if sample is samples[0] or sample is end or int(sample[0]) % 60 < SOAK_SAMPLE_S:
                lines.append(f"| {sample[0]:.0f} s | {mib(sample[1])} | {mib(sample[2])} |")
        lines += ["", f"- RSS within {SOAK_TOLERANCE:.0%} of its value after one minute: **{'MET' if flat else 'NOT MET'}** "
                      f"({mib(after_minute[2])} MiB at {after_minute[0]:.0f} s, {mib(end[2])} MiB at the end: "
                      f"{growth:+.1%})"]
        if non200:
            lines.append(f"- {non200:,} answers were not 200 (see above): the run exits 1.")
        return "\n".join(lines) + "\n", flat and non200 == 0

    # -- stream ---------------------------------------------------------------------

    def stream(self) -> tuple[str, bool]:
        bench = self.bench
        base, cookie = bench.urls["gateway"], bench.cookies["gateway"]
        rows, passed = [], True
        for direction in ("upload", "download"):
            bench.log(f"stream: 1 GiB {direction} through the gateway")
            before = group_rss_kib(bench.pgids["gateway"])
            with RssSampler(bench.pgids["gateway"], 0.05) as sampler:
                started = time.monotonic()
                moved = asyncio.run(transfer(base, cookie, direction))
                seconds = time.monotonic() - started
            peak = sampler.peak()
            growth = (peak[1] - before[1]) / 1024
            ok = moved == STREAM_BYTES and growth <= FLAT_MIB
            passed &= ok
            rows.append(f"| {direction} | {moved / (1 << 20):,.0f} MiB in {seconds:.1f} s ({moved / seconds / (1 << 20):,.0f} MiB/s) | "
                        f"{mib(before[0])} / {mib(before[1])} | {mib(peak[0])} / {mib(peak[1])} | {growth:+,.1f} MiB | "
                        f"**{'MET' if ok else 'NOT MET'}** |")
        lines = self.header("proxy stream: 1 GiB up and 1 GiB down through the gateway")
        lines += [
            f"RSS of the gateway (its main process / all its processes) read every 50 ms during each transfer. "
            f"Flat: the peak stays within {FLAT_MIB:g} MiB of the RSS before the transfer, and every byte arrived.",
            "",
            "| transfer | bytes through the gateway | RSS before, MiB | peak RSS during, MiB | growth | flat |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            *rows,
        ]
        return "\n".join(lines) + "\n", passed


async def transfer(base: str, cookie: str, direction: str) -> int:
    """1 GiB up (the upstream counts what it received) or down; returns the bytes that made it."""
    import aiohttp

    headers = {"Cookie": cookie, "Origin": base, "Sec-Fetch-Site": "same-origin"}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as client:
        if direction == "upload":
            async def body():
                block = b"\x5a" * CHUNK
                for _ in range(STREAM_BYTES // CHUNK):
                    yield block

            upload_headers = {**headers, "Content-Type": "application/octet-stream",
                              "Content-Length": str(STREAM_BYTES)}
            async with client.post(base + "/upload", data=body(), headers=upload_headers) as response:
                if response.status != 200:
                    return 0
                return int((await response.json())["bytes"])
        received = 0
        async with client.get(f"{base}/download?bytes={STREAM_BYTES}", headers=headers) as response:
            if response.status != 200:
                return 0
            async for chunk in response.content.iter_chunked(CHUNK):
                received += len(chunk)
        return received
