"""Deduplication and a global cap, so a hotel behind one NAT address, or an attack, does
not bury the operator's mailbox: one alert per (kind, user, address) per
`alerts.min_interval`, at most `alerts.max_per_hour` in all.

What the cap holds back is not lost: each held-back alert is remembered (kind, user,
address, time; never more than `HELD_MAX` of them, the rest only counted) and the next
alert that goes out carries the list. When nothing else would go out, the alerter sends a
summary as soon as the cap has room again (`free_in`). Some alerts are never deduplicated
(`Alert.dedupe_key` is None: strict mode's every-login alert), only capped."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
HELD_MAX = 1000  # held-back alerts kept for the summary; past this they are only counted


@dataclass(slots=True)
class HeldBack:
    """What the cap held back since the last alert went out."""

    count: int = 0
    alerts: list[Any] = field(default_factory=list)  # the first HELD_MAX of them

    def __bool__(self) -> bool:
        return self.count > 0


class AlertThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._sent: deque[float] = deque()
        self._held = HeldBack()

    @property
    def suppressed(self) -> int:
        """Alerts over the cap since the last alert that went out."""
        return self._held.count

    def admit(self, key: Hashable | None, min_interval: float, max_per_hour: int, held: Any = None) -> bool:
        """Whether an alert may go out now. `key` None: never a duplicate. An alert over the
        cap is counted, and `held` (the alert) kept for the next one that goes out."""
        now = self._clock()
        last = self._last.get(key) if key is not None else None
        if last is not None and now - last < min_interval:
            return False  # a duplicate: not even counted
        self._expire(now)
        if len(self._sent) >= max_per_hour:
            self._held.count += 1
            if held is not None and len(self._held.alerts) < HELD_MAX:
                self._held.alerts.append(held)
            return False
        if key is not None:
            self._last[key] = now
        self._sent.append(now)
        if len(self._last) > 10_000:  # forget keys whose interval has passed
            self._last = {k: t for k, t in self._last.items() if now - t < min_interval}
        return True

    def free_in(self, max_per_hour: int) -> float:
        """Seconds until the cap lets one more alert through (0: now)."""
        now = self._clock()
        self._expire(now)
        if len(self._sent) < max_per_hour:
            return 0.0
        return max(0.0, self._sent[len(self._sent) - max_per_hour] + HOUR - now)

    def take_held(self) -> HeldBack:
        """What was held back, handed to the alert going out (and forgotten here)."""
        held, self._held = self._held, HeldBack()
        return held

    def take_suppressed(self) -> int:
        return self.take_held().count

    def _expire(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= HOUR:
            self._sent.popleft()
