"""The proxy benchmark must keep working: a 1-second run of every part, plus its parsers.

`bench/proxy_bench.py --smoke` starts the upstream, the gateway and nginx (when installed),
runs each measurement for 1 s (wrk when installed, the Python load generator otherwise, and
one cell with the Python generator in any case), skips py-spy and RESULTS.md, and exits 0
only when every target answered 200.
"""

from __future__ import annotations

import importlib.util
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
    spec.loader.exec_module(module)
    return module


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
        "non2xx": 7,
        "errors": 3,
    }


def test_write_results_replaces_only_its_own_section(tmp_path):
    bench = load_bench()
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
    summary = load_bench().summarise_profile(raw)
    assert summary["samples"] == 10
    assert dict(summary["packages"]) == {"aiohttp": 0.6, "gateway": 0.3, "asyncio (stdlib)": 0.1}
    assert summary["own"][0] == ("StreamWriter._write (aiohttp/http_writer.py)", 0.6)
    assert ("Gateway.handle (gateway/proxy/server.py)", 0.9) in summary["gateway_inclusive"]
