"""Human durations in policy and config files: `90s`, `25m`, `12h`, `30d`, or seconds.

Operators write `idle_timeout: 25m`, not `1500`; the validated value is a float of seconds
so code never has to care which unit was written.

In policy files a duration needs its unit: `idle_timeout: 25` once meant 25 seconds to the
gateway and 25 minutes to the operator who wrote it. The policy loader finds bare numbers
with `unitless_durations` (it walks the file's data along the schema, so defaults written
in code and config.yaml, whose timeouts are documented in seconds, are not concerned) and
refuses them with "did you mean 25m?"; `pms-gateway policy migrate` writes them as `25s`.

Every duration is finite and at most `MAX_DURATION`: an infinite or 400-digit timeout
once passed `policy check` and then failed at every use (Redis refuses such an expiry),
so a correct password answered 500. Fields with a narrower sensible range use
`DurationIn("1m", "7d")`, which says the range in its error and in the JSON Schema.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
MAX_DURATION = 3650 * 86400  # ten years: beyond any timeout, lifetime or retention
_HINT = "write e.g. 90s, 25m, 12h or 30d"
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def parse_duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration: {_HINT}")
    if isinstance(value, int) and abs(value) > MAX_DURATION:  # float() of 400 digits overflows
        seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"{_shown(value)} is not a duration: {_HINT}")
    if math.isnan(seconds):
        raise ValueError(f"expected a duration: {_HINT}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"{_shown(value)} is longer than the longest duration allowed, {format_duration(MAX_DURATION)}")
    return seconds


def is_unitless(value: object) -> bool:
    """A bare number, or a number written as text without a unit."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) or (isinstance(value, str) and _BARE_NUMBER.match(value) is not None)


def unitless_message(value: object) -> str:
    number = str(value).strip()
    return (f"{number} has no unit: did you mean {number}m? (write {number}s, {number}m, {number}h or {number}d; "
            f"a bare number meant seconds so far: `pms-gateway policy migrate FILE` writes {number}s)")


def unitless_durations(model: type[BaseModel], data: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(key path, value) of every duration field of `model` that `data` writes as a bare number."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        info = model.model_fields.get(key) if isinstance(key, str) else None
        if info is not None:
            yield from _walk(info.annotation, tuple(info.metadata), value, (*loc, key))


def _walk(annotation: Any, metadata: tuple, value: Any, loc: tuple) -> Iterator[tuple[tuple, Any]]:
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        yield from _walk(base, (*metadata, *extra), value, loc)
        return
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata):
        if is_unitless(value):
            yield loc, value
        return
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        found = {path: v for member in get_args(annotation) for path, v in _walk(member, (), value, loc)}
        yield from found.items()
    elif origin is list and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(get_args(annotation)[0], (), item, (*loc, index))
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(get_args(annotation)[1], (), item, (*loc, key))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from unitless_durations(annotation, value, loc)


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _shown(value: object) -> str:
    """The value as the operator wrote it, cut short (a 400-digit number is not an error message)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "..." + text[-6:]


def _json_schema(minimum: float = 0, maximum: float = MAX_DURATION, note: str = "") -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": r"^\d+(\.\d+)?[smhdw]?$"},
            {"type": "number", "minimum": minimum, "maximum": maximum},
        ],
        "description": f"A duration: 90s, 25m, 12h, 30d, or a number of seconds{note}.",
    }


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_json_schema()),
]


def DurationIn(low: str, high: str) -> Any:  # noqa: N802 (used as a type: `DurationIn("1m", "7d")`)
    """A Duration between `low` and `high` inclusive, both written as durations."""
    minimum, maximum = parse_duration(low), parse_duration(high)

    def within(seconds: float) -> float:
        if not minimum <= seconds <= maximum:
            raise ValueError(f"{format_duration(seconds)} is out of range: between {low} and {high}")
        return seconds

    return Annotated[
        float,
        BeforeValidator(parse_duration),
        AfterValidator(within),
        PlainSerializer(format_duration, return_type=str),
        WithJsonSchema(_json_schema(minimum, maximum, f", from {low} to {high}")),
    ]
