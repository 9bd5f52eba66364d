"""Prometheus metrics of the data plane: what was decided, how fast, how the PMS answered."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from gateway.proxy.exchange import Addon, Exchange

if TYPE_CHECKING:
    from gateway.redact.mail_queue import MailQueue

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics(Addon):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "Requests handled, by decision and status class",
            ["decision", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Time from request to answer", buckets=_BUCKETS, registry=self.registry
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds", "Time the PMS took to answer", buckets=_BUCKETS, registry=self.registry
        )
        self._counters: dict[tuple[str, str], Counter] = {}  # labelled children, looked up once each

    def watch_mail_queue(self, queue: MailQueue, clock: Callable[[], float] = time.time) -> None:
        """Export the SMTP relay's delivery queue: depth and the oldest message's age."""
        self.registry.register(_MailQueueCollector(queue, clock))

    async def done(self, ex: Exchange) -> None:
        status_class = f"{ex.status // 100}xx" if ex.status else "none"
        key = (ex.decision, status_class)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        self.duration.observe(time.perf_counter() - ex.started)
        if ex.upstream_seconds is not None:
            self.upstream.observe(ex.upstream_seconds)


class _MailQueueCollector:
    """Read at each scrape from the queue's file names (their epoch prefix): no key, no content."""

    def __init__(self, queue: MailQueue, clock: Callable[[], float]) -> None:
        self.queue, self.clock = queue, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, oldest = self.queue.depth_and_oldest()
        yield GaugeMetricFamily("gateway_mail_queue_depth", "Messages in the SMTP relay's delivery queue", value=depth)
        yield GaugeMetricFamily(
            "gateway_mail_queue_oldest_age_seconds", "Age of the oldest message in the delivery queue (0: empty)",
            value=0 if oldest is None else max(self.clock() - oldest, 0),
        )
