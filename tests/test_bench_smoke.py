"""The proxy benchmark must keep working: a 1-second run of every part, plus its parsers.

`bench/proxy_bench.py --smoke` starts the upstream, the gateways (lean, aiohttp, two
workers; sessions in Redis, audit in PostgreSQL) and the references, signs one user in
to each gateway (invite, password, TOTP) and checks that its pages are refused without
the cookies, runs each kind of measurement for 1 s (wrk when installed, the Python load
generator otherwise, and one cell with the Python generator in any case), skips py-spy
and RESULTS.md, and exits 0 only when every target answered 200.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "proxy_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("proxy_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["proxy_bench"] = module
    spec.loader.exec_module(module)  # puts bench/ on sys.path for the bench_* modules
    return module


def load(name: str):
    load_bench()
    return importlib.import_module(name)


@pytest.mark.timeout(90)
def test_smoke_run_answers_200_everywhere():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "1", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "| /page2k | direct |" in done.stdout
    assert "| /page2k | gateway |" in done.stdout
    assert "| /page100k | gateway |" in done.stdout
    assert "| /page2k | gateway-aiohttp |" in done.stdout and "| /page2k | gateway-w2 |" in done.stdout
    # the gateway's own audit trail says it served the signed-in user's pages
    assert re.search(r"\| /page2k \| gateway \| [\d,]+ \| [\d,]+ \| \d+% \| [\d.]+ \| 200 allowed: [\d,]+ \|", done.stdout)
    assert "### Goals (issue 14)" in done.stdout
    assert "python load generator check" in done.stdout or "load generator: Python" in done.stdout
    assert "PROBLEM" not in done.stdout


WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/page2k
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.71ms  745.01us  20.38ms   92.88%
    Req/Sec    29.64k     1.12k   31.41k    87.00%
  Latency Distribution
     50%  635.00us
     75%    1.73ms
     90%    2.09ms
     99%    1.05s
  294980 requests in 10.00s, 644.42MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  29492.31
Transfer/sec:     64.43MB
"""


def test_parse_wrk():
    figures = load_bench().parse_wrk(WRK_OUTPUT)
    assert figures == {
        "rps": 29492.31,
        "p50_ms": pytest.approx(0.635),
        "p99_ms": pytest.approx(1050.0),
        "requests": 294980,
        "bytes": pytest.approx(644.42 * 2**20),
        "non2xx": 7,
        "errors": 3,
    }


def test_write_results_replaces_only_its_own_section(tmp_path):
    bench = load("bench_results")
    results = tmp_path / "RESULTS.md"
    bench.write_results("first\n", results)
    assert results.read_text().startswith("# Benchmark results")
    text = results.read_text() + "\n<!-- other-bench:start -->\nkeep me\n<!-- other-bench:end -->\n"
    results.write_text(text)
    bench.write_results("second\n", results)
    new = results.read_text()
    assert "first" not in new and "second" in new
    assert "<!-- other-bench:start -->\nkeep me\n<!-- other-bench:end -->" in new
    assert new.count(bench.START_MARK) == 1 and new.count(bench.END_MARK) == 1


def test_profile_summary_groups_by_package():
    raw = (
        "run (gateway/cli.py:97);Gateway.handle (gateway/proxy/server.py:120) 3\n"
        "Gateway.handle (gateway/proxy/server.py:120);StreamWriter._write (aiohttp/http_writer.py:103) 6\n"
        "Runner.run (asyncio/runners.py:118) 1\n"
    )
    summary = load("bench_profile").summarise_profile(raw)
    assert summary["samples"] == 10
    assert dict(summary["packages"]) == {"aiohttp": 0.6, "gateway": 0.3, "asyncio (stdlib)": 0.1}
    assert summary["own"][0] == ("StreamWriter._write (aiohttp/http_writer.py)", 0.6)
    assert ("Gateway.handle (gateway/proxy/server.py)", 0.9) in summary["gateway_inclusive"]


def test_readme_summary_goes_between_its_markers(tmp_path):
    results = load("bench_results")
    assert results.SUMMARY_START in results.README.read_text()  # README keeps the markers `make bench` needs
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{results.SUMMARY_START}\nold figures\n{results.SUMMARY_END}\n\n## next\n")
    assert results.write_readme_summary(["new figures", "- goal: **MET**"], readme)
    assert readme.read_text() == (f"# title\n\n{results.SUMMARY_START}\nnew figures\n- goal: **MET**\n"
                                  f"{results.SUMMARY_END}\n\n## next\n")
    readme.write_text("no markers\n")
    assert not results.write_readme_summary(["x"], readme)
    assert readme.read_text() == "no markers\n"


class FakeRow:
    def __init__(self, rps, requests=0, bad=0, audit=None, cpu_us=None):
        self.rps, self.requests, self.bad, self.audit, self.cpu_us = rps, requests, bad, audit, cpu_us or {}


class FakeReport:
    def __init__(self, rows):
        self.rows = rows

    def row(self, target, page):
        return self.rows.get((target, page))

    def rps(self, target, page):
        row = self.row(target, page)
        return row.rps if row and not row.bad else None

    def cpu_of(self, target, page, process):
        row = self.row(target, page)
        return row.cpu_us.get(process) if row else None

    def fixed_row(self, target):
        return None


def test_goals_read_the_audit_count_and_the_workers_ratio():
    bench = load_bench()
    goals = load("bench_goals")

    def audit(during, caught_up, catch_up_s):
        return bench.AuditCount(during, during, catch_up_s, caught_up, {"200 allowed": during})

    def verdicts(rows):
        return {name.split(" ", 1)[0]: verdict for name, verdict, _ in goals.Goals(FakeReport(rows), "1,000").all()}

    keeping_up = {("gateway", "/page2k"): FakeRow(3000, 15000, audit=audit(14800, True, 0.2), cpu_us={"gateway": 100}),
                  ("nginx", "/page2k"): FakeRow(9000), ("gateway-w1", "/page2k"): FakeRow(2000),
                  ("gateway-w2", "/page2k"): FakeRow(3500)}
    got = verdicts(keeping_up)
    assert got["audit"] == "MET" and got["listen.workers:"] == "MET" and got["p99"] == "not measured"
    assert [v for n, v, _ in goals.Goals(FakeReport(keeping_up), "1,000").throughput()] == ["MET", "not measured"]
    behind = {**keeping_up, ("gateway", "/page2k"): FakeRow(3000, 15000, audit=audit(12000, True, 1.2)),
              ("gateway-w2", "/page2k"): FakeRow(3000)}
    got = verdicts(behind)
    assert got["audit"] == "NOT MET" and got["listen.workers:"] == "NOT MET"
    # a non-200 answer in the cell leaves the ratio unmeasured rather than flattering it
    refused = {**keeping_up, ("gateway", "/page2k"): FakeRow(3000, 15000, bad=3)}
    assert goals.Goals(FakeReport(refused), "1,000").throughput()[0][1] == "not measured"
