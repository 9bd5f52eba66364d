"""The proxy benchmark's report: its tables, the goals' verdicts and the profile, as the
Markdown that goes into bench/RESULTS.md (and the few lines README's summary states).

It reads the rows bench/proxy_bench.py measured; it measures nothing itself.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from bench_goals import CPU_US_2K, RPS_VS_NGINX, Goals
from bench_layout import DISTURBED_PCT, GATEWAY_SPECS, LOADGEN_CORE, SERVER_CORE
from bench_upstream import PAGES


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
    stores: str = ""
    throughput: list = field(default_factory=list)  # proxy_bench.Throughput rows
    fixed: list = field(default_factory=list)  # proxy_bench.FixedRate rows
    profile: dict | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def row(self, target: str, page: str):
        return next((r for r in self.throughput if r.target == target and r.page == page), None)

    def rps(self, target: str, page: str) -> float | None:
        row = self.row(target, page)
        return row.rps if row is not None and row.bad == 0 else None

    def fixed_row(self, target: str):
        return next((row for row in self.fixed if row.target == target), None)

    def cpu_of(self, target: str, page: str, process: str) -> float | None:
        row = self.row(target, page)
        return row.cpu_us.get(process) if row is not None else None

    def rate_label(self) -> str:
        return f"{self.fixed[0].rate if self.fixed else 1000:,.0f}"

    def goals(self) -> list[tuple[str, str, str]]:
        return Goals(self, self.rate_label()).all()

    # -- text ---------------------------------------------------------------------

    def tables(self) -> list[str]:
        lines = [
            f"Throughput: closed loop, {self.connections} connections, {self.duration} s per cell, "
            f"load generator: {self.tool}. Every gateway request is a signed-in user's (session and device "
            "cookies), audited. CPU is microseconds of CPU time per request, per process on the path "
            "(proxy + upstream); \"other jobs\" is CPU taken meanwhile by processes that are not part of "
            "the benchmark (% of one core).",
            "",
            "| page | target | req/s | p50 ms | p99 ms | CPU µs/req | busy after, s | other jobs | requests | non-200/errors |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in self.throughput:
            lines.append(
                f"| {row.page} | {row.target} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
                f"{fmt_cpu(row.cpu_us)} | {fmt_drain(row.drain_s)} | {row.other_pct:.0f}% | {row.requests:,} | {row.bad} |"
            )
        for row in self.throughput:
            if row.bad and row.detail:
                lines += ["", f"{row.target} {row.page}: {row.detail}"]
        drained = [r.drain_s for r in [*self.throughput, *self.fixed] if r.drain_s]
        if drained and max(drained) >= 1:
            lines += [
                "",
                f"\"busy after\": a gateway kept working up to {max(drained):.1f} s after the load stopped, "
                "on work queued during the cell: it accepted requests faster than it can finish them. The "
                "next cell starts once it is idle, and the CPU of that catch-up counts in its CPU per request.",
            ]
        return lines + self.audit_table() + self.ratio_table() + self.workers_lines() + self.fixed_table() + self.warnings()

    def audit_table(self) -> list[str]:
        rows = [r for r in self.throughput if r.audit is not None]
        if not rows:
            return []
        lines = [
            "",
            "Audit, in the same closed-loop cells: records the gateway's writer stored (counted in its "
            "chain heads in PostgreSQL) while the load ran, per second, against the requests served per "
            "second; then how long after the load every served request had its record, and what the "
            "records say the gateway answered.",
            "",
            "| page | target | req/s served | records/s stored | stored by the end | all stored after, s | records by status |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in rows:
            audit, seconds = row.audit, row.requests / row.rps if row.rps else 0
            after = f"{audit.catch_up_s:.1f}" if audit.caught_up else f"not within {audit.catch_up_s:.0f}"
            statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(audit.statuses.items()))
            lines.append(
                f"| {row.page} | {row.target} | {row.rps:,.0f} | {audit.during_load / seconds if seconds else 0:,.0f} | "
                f"{audit.during_load / row.requests if row.requests else 0:.0%} | {after} | {statuses} |"
            )
        return lines

    def ratio_table(self) -> list[str]:
        lines = [
            "",
            "Ratios of req/s, then of the proxy process's CPU per request. \"gateway\" is the default "
            "engine (lean); \"lean\" the smallest relay on that engine (the Python ceiling); \"bare\" the "
            "smallest aiohttp+uvloop proxy; \"gateway-aiohttp\" the gateway on `listen.engine: aiohttp`.",
            "",
            "| page | gateway/nginx | gateway/direct | nginx/direct | gateway/lean | gateway/bare | gateway-aiohttp/gateway "
            "| lean/bare | CPU gateway/nginx | CPU gateway/lean | CPU gateway-aiohttp/bare |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for page in PAGES:
            d, g, n, b, ga, lr = (self.rps(t, page) for t in ("direct", "gateway", "nginx", "bare", "gateway-aiohttp", "lean"))
            gw_cpu = self.cpu_of("gateway", page, "gateway")
            cpu = (ratio(gw_cpu, self.cpu_of("nginx", page, "nginx")), ratio(gw_cpu, self.cpu_of("lean", page, "lean")),
                   ratio(self.cpu_of("gateway-aiohttp", page, "gateway-aiohttp"), self.cpu_of("bare", page, "bare")))
            cells = [ratio(g, n), ratio(g, d), ratio(n, d), ratio(g, lr), ratio(g, b), ratio(ga, g), ratio(lr, b), *cpu]
            lines.append(f"| {page} | " + " | ".join(fmt_ratio(c) for c in cells) + " |")
        return lines

    def workers_lines(self) -> list[str]:
        one, two = self.rps("gateway-w1", "/page2k"), self.rps("gateway-w2", "/page2k")
        if one is None and two is None:
            return []
        cores = self.machine.get("nproc")
        return [
            "",
            f"Workers: `gateway-w1` is the one-worker gateway above and `gateway-w2` the same configuration "
            f"with `listen.workers: 2` (SO_REUSEPORT, both workers on the run's Redis and database), measured "
            f"one after the other in one placement. For these two cells nothing is pinned: the upstream and "
            f"every process of the one-worker gateway are moved from core {SERVER_CORE} to all {cores} cores "
            f"(`taskset -a -p`, moved back afterwards), the two-worker gateway was started unpinned, and wrk "
            f"(one thread, a process of its own) runs unpinned too, so workers, upstream and load generator "
            f"share the {cores} cores. On {cores} cores the upstream and wrk take a large part of the core a "
            f"second worker would need, so the ratio is a floor of what a second worker gives on a host of its "
            f"own. Ratio w2/w1: {fmt_ratio(ratio(two, one))}.",
        ]

    def fixed_table(self) -> list[str]:
        if not self.fixed:
            return []
        lines = [
            "",
            f"Added latency: open loop at a fixed {self.rate_label()} req/s on /page2k, "
            f"{self.duration} s per target (Python aiohttp generator, the signed-in user's cookies on gateway "
            "requests; latency from send to last byte; \"generator lag\" is how late the generator itself "
            "sent, not counted in latency).",
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
        for row in self.fixed:
            if row.bad and row.detail:
                lines += ["", f"{row.target} at the fixed rate: {row.detail}"]
        direct = self.fixed_row("direct")
        for name in ("gateway", "gateway-aiohttp"):
            gw = self.fixed_row(name)
            if gw and direct:
                lines += ["", f"Added by {name}: p50 {gw.p50_ms - direct.p50_ms:+.2f} ms, "
                              f"p99 {gw.p99_ms - direct.p99_ms:+.2f} ms, p99.9 {gw.p999_ms - direct.p999_ms:+.2f} ms."]
        return lines

    def warnings(self) -> list[str]:
        lines = []
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

    def profile_lines(self) -> list[str]:
        p = self.profile
        if not p or not p["samples"]:
            reason = "; ".join(n for n in self.notes if "py-spy" in n) or "profiling skipped"
            return [f"No profile this run ({reason})."]
        cpu = p["cpu"]
        shares = ", ".join(f"{name} {share:.0%}" for name, share in p["packages"] if share >= 0.01)
        placement = (
            f"the upstream moved to core {LOADGEN_CORE} for this phase, so the gateway had core {SERVER_CORE} to itself"
            if p.get("upstream_moved") else "the upstream still sharing the gateway's core"
        )
        alone = f" and served {p['rps']:,.0f} req/s" if p.get("rps") else ""
        lines = [
            f"py-spy {self.machine.get('py-spy')} sampled the default gateway (lean engine, one worker) for "
            f"{cpu['seconds']:.0f} s while wrk loaded /page2k as the signed-in user ({placement}; "
            f"`py-spy record --rate 200 --function --threads --format raw`, main thread, "
            f"{p['samples']:,} samples of busy stacks). Meanwhile the gateway used "
            f"{cpu['gateway_user_pct']:.0f}% of a core in user space and {cpu['gateway_kernel_pct']:.0f}% in "
            f"the kernel{alone}; other jobs took {cpu['other_pct']:.0f}% of a core.",
            "",
            *self.cost_lines(),
            f"Own time by package (share of busy samples): {shares}. Samples whose innermost Python frame is "
            "the event loop (`Runner.run`) are uvloop's C code and C extensions it calls (socket reads, the "
            "httptools parser, callbacks); a `write`/`send` frame is the system call: on loopback the kernel "
            "delivers the bytes to the receiver inside that call"
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
            lines += ["", "Gateway functions by inclusive time (own + what they call):", "",
                      "| inclusive | function (file) |", "| ---: | --- |"]
            lines += [f"| {share:.1%} | `{name}` |" for name, share in p["gateway_inclusive"]]
        return lines

    def cost_lines(self) -> list[str]:
        """The gateway's CPU per 2 KB request beside the references' and the budget the goals leave."""
        gw_cpu = self.cpu_of("gateway", "/page2k", "gateway")
        if not gw_cpu:
            return []
        refs = [("the lean relay (Python ceiling) {:.0f} µs", self.cpu_of("lean", "/page2k", "lean")),
                ("the bare aiohttp proxy {:.0f} µs", self.cpu_of("bare", "/page2k", "bare")),
                ("nginx {:.0f} µs", self.cpu_of("nginx", "/page2k", "nginx")),
                ("the upstream {:.0f} µs to serve it directly", self.cpu_of("direct", "/page2k", "upstream"))]
        text = f"Per 2 KB request the gateway costs {gw_cpu:.0f} µs of CPU; " + ", ".join(
            template.format(value) for template, value in refs if value)
        lean = self.cpu_of("lean", "/page2k", "lean")
        if lean and gw_cpu > lean:
            text += (f". The engine's own round trip (the lean relay) is {lean / gw_cpu:.0%} of that; the "
                     f"gateway's addons and its request handling (session, guards, canonical path, headers, "
                     f"audit) the other {1 - lean / gw_cpu:.0%}")
        ng_cpu = self.cpu_of("nginx", "/page2k", "nginx")
        if ng_cpu:
            share = RPS_VS_NGINX["/page2k"]
            budget = (ng_cpu + (self.cpu_of("nginx", "/page2k", "upstream") or 0)) / share
            behind = self.cpu_of("gateway", "/page2k", "upstream") or 0
            text += (f". With the upstream on the same core, req/s is about 1 s / (proxy + upstream CPU per "
                     f"request): {share}x nginx's req/s leaves {budget:.0f} µs per request for gateway and upstream "
                     f"together, so ~{budget - behind:.0f} µs for the gateway (the goal says {CPU_US_2K:g})")
        return [text + ".", ""]

    def markdown(self) -> str:
        m = self.machine
        addons = ", ".join(a.rsplit(".", 1)[-1] for a in self.addons) if isinstance(self.addons, list) and self.addons else (
            "none (build_addons returned no addon: the bare proxy path)" if isinstance(self.addons, list) else self.addons
        )
        gateways = "; ".join(f"`{name}`: engine {spec.engine}, {spec.workers} worker(s)"
                             for name, spec in GATEWAY_SPECS.items())
        lines = [
            "## proxy: gateway vs. direct upstream vs. nginx",
            "",
            f"- Date: {self.date}",
            f"- Command: `{self.command}`",
            f"- Machine: {m['nproc']} cores ({m['cpu']}), Linux {m['kernel']}; Python {m['python']}, "
            f"aiohttp {m['aiohttp']}, uvloop {m['uvloop']}; nginx {m['nginx']}, wrk {m['wrk']}; commit {m['commit']}",
            "- Placement: "
            + (
                f"upstream, gateways (one worker) and nginx pinned to core {SERVER_CORE}; load generators pinned "
                f"to core {LOADGEN_CORE}; the workers comparison unpinned (below)."
                if self.pinned
                else "not pinned (taskset missing or fewer than 2 cores): figures are noisier."
            ),
            f"- Gateways: {gateways}; policy files {', '.join(self.policies)}; active addons: {addons}.",
            f"- Stores: {self.stores}",
        ]
        lines += [f"- Note: {note}" for note in self.notes]
        lines += ["", *self.tables(), "", "### Goals (issue 14)", ""]
        for name, verdict, figure in self.goals():
            lines.append(f"- {name}: **{verdict}**" + (f" ({figure})" if figure else ""))
        lines += ["", "### What limits it", "", *self.profile_lines()]
        return "\n".join(lines) + "\n"

    def summary(self) -> list[str]:
        """README's benchmark summary: the goals' lines of this run, wrapped as README is."""
        m = self.machine
        cells = [*self.throughput, *self.fixed]
        disturbed = sum(1 for r in cells if r.other_pct >= DISTURBED_PCT)
        head = (f"Last proxy benchmark (`{self.command}`, {self.date}, {m['nproc']} cores, commit {m['commit']}; "
                "the gateway on its "
                "default lean engine, every addon on, a signed-in user's audited requests, sessions in Redis, "
                "audit in PostgreSQL" + (f"; other jobs took >= {DISTURBED_PCT:.0f}% of a core during {disturbed} "
                                         f"of its {len(cells)} cells" if disturbed else "") + "):")
        bullets = [f"{name}: **{verdict}**" + (f" ({figure})" if figure else "") for name, verdict, figure in self.goals()]
        return [*textwrap.wrap(head, 90), "",
                *(line for bullet in bullets for line in textwrap.wrap(bullet, 90, initial_indent="- ",
                                                                        subsequent_indent="  "))]
