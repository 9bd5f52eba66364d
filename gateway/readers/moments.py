"""When, as an operator types it on the command line: `--since yesterday`, `--since 2h`,
`--until 2025-03-01`, `--since "2025-03-01 08:00"`.

One reader for every command that takes a time, so `yesterday` and `7d` mean the same
everywhere. Days and times without an offset are the property's (policy
`property_timezone`): "yesterday" at a hotel in Prague starts at midnight in Prague, not
in UTC. An age needs its unit (`2h`, `7d`, `30m`, `90s`, `2w`): a bare `2025` is a year
typed in a hurry, not 2025 seconds ago, and is refused with what to write instead.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HINT = "write yesterday, today, now, an age such as 2h or 7d, a date 2025-03-01 or 2025-03-01T08:00"


def parse_moment(text: str, *, zone: tzinfo = UTC, now: datetime | None = None) -> datetime:
    """The moment `text` names, timezone-aware; ValueError with what to write otherwise."""
    now = now or datetime.now(UTC)
    value = text.strip().lower()
    if value == "now":
        return now
    if value in ("today", "yesterday"):
        day = now.astimezone(zone).date() - timedelta(days=1 if value == "yesterday" else 0)
        return _midnight(day, zone)
    if (age := _AGE.match(value)) is not None:
        return now - timedelta(seconds=float(age.group(1)) * _UNITS[age.group(2)])
    try:
        if len(value) == 10:
            return _midnight(date.fromisoformat(value), zone)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {HINT}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)
