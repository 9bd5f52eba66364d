"""The helper processes the proxy benchmark starts besides the gateway: the two
reference relays and the Python load generators (`proxy_bench.py --role NAME`).

The relays are the yardsticks of the gateway's engines: the smallest relay on the lean
engine (the Python ceiling) and the smallest aiohttp proxy. The generators are used where
wrk cannot go: the open loop at a fixed rate (wrk is closed loop only), and as a
fallback when wrk is not installed. A gateway target's cookies reach them in the
`BENCH_COOKIE` environment variable, off the command line.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from bench_upstream import fast_loop, listen_until_signal, serve_until_signal

ROOT = Path(__file__).resolve().parent.parent


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

        await listen_until_signal(Relay, port)
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


def cookie_headers(cookie: str | None) -> dict[str, str]:
    """The signed-in user's cookies, sent as a browser sends them (gateway targets only)."""
    return {"Cookie": cookie} if cookie else {}


def role_closed(url: str, connections: int, duration: float, warmup: float, cookie: str | None) -> None:
    """Closed loop: `connections` workers each send the next request when one returns."""
    import asyncio

    import aiohttp

    fast_loop()

    async def main() -> dict:
        latencies: list[float] = []
        statuses: Counter = Counter()
        sent = [0]
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False, headers=cookie_headers(cookie),
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:

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


def role_open(url: str, rate: float, duration: float, warmup: float, cookie: str | None) -> None:
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
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False, headers=cookie_headers(cookie),
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:

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
