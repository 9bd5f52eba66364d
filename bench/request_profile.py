"""Where the CPU of one authenticated, audited request goes, function by function.

`proxy_bench.py` measures the throughput of such requests (py-spy, under load); this
profiles, with cProfile, the request a signed-in member of staff makes: session cookie, device cookie, session lookup in Redis,
every addon, an audit record. It builds the real gateway and demo PMS of the tests
(tests/login_env.py) on Redis, signs alice in (password + second factor), the demo PMS and
the load client in processes of their own, then sends N keep-alive GETs while cProfile
records the gateway's process (time the event loop waits in epoll is left out).

    .venv/bin/python bench/request_profile.py --requests 2000 [--engine lean] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- request-profile:start -->", "<!-- request-profile:end -->"


CLIENT = """
import asyncio, sys, aiohttp
async def run(url, cookie, n):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        for _ in range(n):
            async with client.get(url, headers={"Cookie": cookie, "Sec-Fetch-Site": "same-origin"},
                                  allow_redirects=False) as response:
                await response.read()
                assert response.status == 200, response.status
asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

PMS = """
import sys
from aiohttp import web
from gateway.demo import DemoSettings, create_app
web.run_app(create_app(DemoSettings()), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def keep_alive_gets(url: str, cookie: str, n: int) -> None:
    """N keep-alive GETs from another process: only the gateway is in this process's profile."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, cookie, str(n), cwd=ROOT)
    if await proc.wait() != 0:
        raise SystemExit("the load client failed")


async def profile(n: int, engine: str) -> tuple[pstats.Stats, float, float]:
    from tests.fixtures_services import DEFAULT_REDIS_URL
    from tests.harness import free_port
    from tests.login_env import Browser, login_env, store_url_for

    os.environ["PMS_GATEWAY_LISTEN__ENGINE"] = engine
    port = free_port()
    pms = await asyncio.create_subprocess_exec(sys.executable, "-c", PMS, str(port), cwd=ROOT)
    try:
        await asyncio.sleep(1.5)  # the demo PMS starting
        with tempfile.TemporaryDirectory() as tmp:
            async with login_env(Path(tmp), store_url_for("redis", DEFAULT_REDIS_URL),
                                 pms_url=f"http://127.0.0.1:{port}") as env:
                browser = Browser(env)
                await browser.password("alice")
                await browser.enroll("alice")
                cookie = f'gw_session={browser.cookie("gw_session")}; gw_device={browser.cookie("gw_device")}'
                await browser.close()
                await keep_alive_gets(env.url + "/reservations", cookie, 200)  # warm-up
                profiler = cProfile.Profile()
                started, cpu0 = time.perf_counter(), time.process_time()
                profiler.enable()
                await keep_alive_gets(env.url + "/reservations", cookie, n)
                profiler.disable()
                return pstats.Stats(profiler), time.process_time() - cpu0, time.perf_counter() - started
    finally:
        pms.terminate()
        await pms.wait()


IDLE = ("poll", "select", "control", "_run_once", "run_forever", "wait")  # the loop waiting, not working


def busy(stats: pstats.Stats) -> dict:
    return {f: v for f, v in stats.stats.items() if not (f[0] == "~" and any(w in f[2] for w in IDLE))}  # type: ignore[attr-defined]


def label(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    path = filename
    for marker in ("site-packages/", "/work/main/", "lib/python3.12/"):
        if marker in filename:
            path = filename.split(marker, 1)[1]
    return f"`{name} ({path})`" if path != "~" else f"`{name}` (built-in)"


def table(stats: pstats.Stats, n: int, key: int, top: int) -> list[str]:
    """key 2: own time (tottime), 3: inclusive (cumtime). µs per request."""
    rows = sorted(busy(stats).items(), key=lambda item: item[1][key], reverse=True)  # type: ignore[attr-defined]
    lines = ["| µs/request | calls/request | function (file) |", "| ---: | ---: | --- |"]
    for func, values in rows[:top]:
        lines.append(f"| {values[key] * 1e6 / n:.1f} | {values[1] / n:.1f} | {label(func)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--engine", default="aiohttp", choices=["aiohttp", "lean"])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="replace the section in bench/RESULTS.md")
    args = parser.parse_args()
    stats, cpu, wall = asyncio.run(profile(args.requests, args.engine))
    total = sum(v[2] for v in busy(stats).values())  # type: ignore[attr-defined]
    gateway_own = sum(v[2] for f, v in stats.stats.items() if "gateway/" in f[0] and "gateway/demo" not in f[0])  # type: ignore[attr-defined]
    n = args.requests
    lines = [
        f"### Engine `{args.engine}`",
        "",
        f"{n} requests in {wall:.2f} s "
        f"(process CPU {cpu * 1e6 / n:.0f} µs/request under the profiler, profiled busy time {total * 1e6 / n:.0f}; "
        f"the gateway's own functions {gateway_own * 1e6 / n:.0f}; cProfile roughly doubles the cost of Python calls).",
        "",
        "Top functions by own time:",
        "",
        *table(stats, n, 2, args.top),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write(args.engine, text)


def write(engine: str, text: str) -> None:
    results = RESULTS.read_text()
    header = (
        "## One authenticated, audited request (cProfile)\n\n"
        "Command: `.venv/bin/python bench/request_profile.py --requests 2000 --engine <engine> --write`: "
        "the real gateway and demo PMS of the tests on Redis, alice signed in (password + second factor), "
        "keep-alive GET /reservations with her session and device cookies; demo PMS and client in other processes, "
        "so the profile is the gateway's alone (idle epoll waits left out). "
        "Absolute figures include cProfile's overhead; compare rows, not machines.\n"
    )
    if START in results:
        body = results.split(START, 1)[1].split(END, 1)[0]
        sections = re.split(r"(?=^### )", body, flags=re.M)  # other engines' and notes are kept
        kept = [s for s in sections if s.startswith("### ") and not s.startswith(f"### Engine `{engine}`")]
        new_body = "\n" + header + "\n" + "".join(sorted(kept + [text + "\n"]))
        results = results.split(START, 1)[0] + START + new_body + END + results.split(END, 1)[1]
    else:
        results = results.rstrip("\n") + f"\n\n{START}\n{header}\n{text}\n{END}\n"
    RESULTS.write_text(results)


if __name__ == "__main__":
    main()
