"""Issue 14's goals, checked against one run's figures: MET, NOT MET or not measured.

Each goal is a line with its verdict and the figure behind it, so RESULTS.md says what
was measured and how far it is from the target. The thresholds are the issue's:

- gateway req/s >= 0.33x nginx on the 2 KB page, >= 0.25x on the 100 KB page;
- gateway CPU <= 110 µs per 2 KB request (the gateway's processes only, the audit
  writer's catch-up after the load included);
- at a fixed 1,000 req/s, p99 added <= 1.5 ms and p99.9 added <= 3 ms (gateway minus
  the upstream served directly, every answer a 200, at the asked rate);
- the audit writer keeps up: in the gateway's closed-loop 2 KB cell the records stored
  while the load ran are at least AUDIT_SHARE of the requests served (the writer stores in
  batches, so the last batch of a cell that keeps up is still in flight when the load
  stops), and all of them are stored within AUDIT_CATCH_UP s after it;
- `listen.workers: 2` >= 1.7x one worker's req/s in the same placement.
"""

from __future__ import annotations

from typing import Protocol

RPS_VS_NGINX = {"/page2k": 0.33, "/page100k": 0.25}
CPU_US_2K = 110.0
ADDED_P99_MS = 1.5
ADDED_P999_MS = 3.0
AUDIT_SHARE = 0.95
AUDIT_CATCH_UP = 1.5
WORKERS_RATIO = 1.7

Verdict = tuple[str, str, str]  # (goal, MET | NOT MET | not measured, figure)


class Figures(Protocol):
    """What the goals read from a run's report (proxy_bench.Report)."""

    def rps(self, target: str, page: str) -> float | None: ...
    def cpu_of(self, target: str, page: str, process: str) -> float | None: ...
    def fixed_row(self, target: str): ...
    def row(self, target: str, page: str): ...


def verdict(name: str, ok: bool | None, figure: str) -> Verdict:
    if ok is None:
        return name, "not measured", figure
    return name, "MET" if ok else "NOT MET", figure


class Goals:
    def __init__(self, report: Figures, rate_label: str) -> None:
        self.report = report
        self.rate_label = rate_label

    def all(self) -> list[Verdict]:
        return [*self.throughput(), self.cpu(), *self.latency(), self.audit(), self.workers()]

    def throughput(self) -> list[Verdict]:
        out = []
        for page, target in RPS_VS_NGINX.items():
            gateway, nginx = self.report.rps("gateway", page), self.report.rps("nginx", page)
            name = f"gateway req/s >= {target}x nginx on {page}"
            if gateway is None or nginx is None:
                out.append(verdict(name, None, "gateway or nginx figure missing (or not all answers were 200)"))
            else:
                out.append(verdict(name, gateway / nginx >= target, f"{gateway / nginx:.2f}x: {gateway:,.0f} vs {nginx:,.0f} req/s"))
        return out

    def cpu(self) -> Verdict:
        used = self.report.cpu_of("gateway", "/page2k", "gateway")
        name = f"gateway CPU per 2 KB request <= {CPU_US_2K:g} µs"
        if used is None:
            return verdict(name, None, "")
        return verdict(name, used <= CPU_US_2K, f"{used:.0f} µs")

    def latency(self) -> list[Verdict]:
        gateway, direct = self.report.fixed_row("gateway"), self.report.fixed_row("direct")
        names = (f"p99 added <= {ADDED_P99_MS:g} ms at a fixed {self.rate_label} req/s",
                 f"p99.9 added <= {ADDED_P999_MS:g} ms at a fixed {self.rate_label} req/s")
        if gateway is None or direct is None:
            return [verdict(name, None, "") for name in names]
        clean = gateway.bad == 0 and gateway.achieved_rps >= 0.95 * gateway.rate
        note = "" if clean else f"; {gateway.bad} non-200, {gateway.achieved_rps:,.0f} of {gateway.rate:,.0f} req/s"
        p99, p999 = gateway.p99_ms - direct.p99_ms, gateway.p999_ms - direct.p999_ms
        return [
            verdict(names[0], clean and p99 <= ADDED_P99_MS,
                    f"{p99:+.2f} ms (gateway {gateway.p99_ms:.2f}, direct {direct.p99_ms:.2f}){note}"),
            verdict(names[1], clean and p999 <= ADDED_P999_MS,
                    f"{p999:+.2f} ms (gateway {gateway.p999_ms:.2f}, direct {direct.p999_ms:.2f}){note}"),
        ]

    def audit(self) -> Verdict:
        name = "audit records/s stored >= req/s served (gateway, /page2k, closed loop)"
        row = self.report.row("gateway", "/page2k")
        if row is None or row.audit is None or not row.requests:
            return verdict(name, None, "")
        audit, seconds = row.audit, row.requests / row.rps if row.rps else 0
        stored_rate = audit.during_load / seconds if seconds else 0.0
        share = audit.during_load / row.requests
        ok = share >= AUDIT_SHARE and audit.caught_up and audit.catch_up_s <= AUDIT_CATCH_UP
        tail = (f"all stored {audit.catch_up_s:.1f} s after the load" if audit.caught_up
                else f"only {audit.after_load:,} of {row.requests:,} stored {audit.catch_up_s:.0f} s after the load")
        return verdict(name, ok, f"{stored_rate:,.0f} records/s stored while serving {row.rps:,.0f} req/s "
                                 f"({share:.0%} of the cell's requests by its end); {tail}")

    def workers(self) -> Verdict:
        one, two = self.report.rps("gateway-w1", "/page2k"), self.report.rps("gateway-w2", "/page2k")
        name = f"listen.workers: 2 >= {WORKERS_RATIO}x one worker (/page2k, same placement)"
        if one is None or two is None:
            return verdict(name, None, "")
        return verdict(name, two / one >= WORKERS_RATIO, f"{two / one:.2f}x: {two:,.0f} vs {one:,.0f} req/s")
