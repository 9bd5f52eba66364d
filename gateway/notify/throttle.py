"""Deduplication and a global cap, so a hotel behind one NAT address, or an attack, does
not bury the operator's mailbox: one alert per (kind, user, address) per
`alerts.min_interval`, at most `alerts.max_per_hour` in all; alerts over the cap are
counted and the count is reported in the next alert that goes out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable

HOUR = 3600.0


class AlertThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._sent: deque[float] = deque()
        self.suppressed = 0  # over the cap since the last alert that went out

    def admit(self, key: Hashable, min_interval: float, max_per_hour: int) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < min_interval:
            return False  # a duplicate: not even counted
        while self._sent and now - self._sent[0] >= HOUR:
            self._sent.popleft()
        if len(self._sent) >= max_per_hour:
            self.suppressed += 1
            return False
        self._last[key] = now
        self._sent.append(now)
        if len(self._last) > 10_000:  # forget keys whose interval has passed
            self._last = {k: t for k, t in self._last.items() if now - t < min_interval}
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count
