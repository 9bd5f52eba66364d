"""What a proxy benchmark run measures, and where each process runs.

Shared by bench/proxy_bench.py (which starts and loads the processes) and
bench/proxy_report.py (which writes their figures), so both name targets the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class GatewaySpec:
    """One gateway process of the run: its engine and workers, where it runs, and the
    instance name and user its audit records and session belong to."""

    engine: str
    workers: int
    pinned: bool  # on SERVER_CORE; False: free on every core (the workers comparison)
    instance: str
    user: str


GATEWAY_SPECS = {
    "gateway": GatewaySpec("lean", 1, True, "pb-lean", "bench-lean"),  # the default engine
    "gateway-aiohttp": GatewaySpec("aiohttp", 1, True, "pb-aiohttp", "bench-aiohttp"),
    "gateway-w2": GatewaySpec("lean", 2, False, "pb-w2", "bench-w2"),
}
# "gateway-w1" is the "gateway" process measured in the workers comparison's placement
ALIASES = {"gateway-w1": "gateway"}
GATEWAYS = (*GATEWAY_SPECS, *ALIASES)


def process_of(target: str) -> str:
    """The process (group) a target's requests are served by."""
    return ALIASES.get(target, target)


ON_PATH = {
    "direct": ("upstream",),
    "nginx": ("nginx", "upstream"),
    "bare": ("bare", "upstream"),
    "lean": ("lean", "upstream"),  # the smallest relay on the lean engine: the Python ceiling
    **{name: (process_of(name), "upstream") for name in GATEWAYS},
}
# closed-loop cells, in the order measured; the bare aiohttp proxy and the lean relay are
# reference points for the 2 KB page only
CLOSED_CELLS = [("/page2k", t) for t in ("direct", "gateway", "gateway-aiohttp", "nginx", "bare", "lean")] + [
    ("/page100k", t) for t in ("direct", "gateway", "gateway-aiohttp", "nginx")]
WORKER_CELLS = [("/page2k", "gateway-w1"), ("/page2k", "gateway-w2")]  # everything free on every core
# --smoke checks that every kind of target answers, so it skips cells that add no new kind
SMOKE_SKIPS = {("/page100k", "direct"), ("/page100k", "gateway-aiohttp"), ("/page100k", "nginx"), ("/page2k", "gateway-w1")}
WORKER_TARGETS = tuple(target for _, target in WORKER_CELLS)
FIXED_TARGETS = ("direct", "gateway", "gateway-aiohttp")
AUDIT_WAIT = 10.0  # seconds to wait at most, after a cell, for the audit records of its requests
SERVER_CORE = 1  # upstream, gateway and nginx
LOADGEN_CORE = 0  # wrk and the Python load generators
SETTLE_LIMIT = 20.0  # seconds to wait at most, per cell, for the gateway to finish its backlog
SETTLE_BUDGET = 40.0  # ... and in a whole run, so it stays near 4 minutes
MAX_RETRIES = 3  # cells measured again at most, so the run stays near 4 minutes
DISTURBED_PCT = 20.0  # other jobs' CPU (% of a core) above which a cell is measured again, once
