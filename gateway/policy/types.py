"""Small validated value types shared by the policy and config schemas."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every schema section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_regex(value: str) -> str:
    """A pattern that compiles alone and inside `(?:...)`: the gateway joins the patterns of
    a list into one alternation, where a global flag such as `(?i)` is an error."""
    try:
        re.compile(value)
        re.compile(f"(?:{value})")
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    except (RecursionError, OverflowError, MemoryError):  # e.g. 5,000 nested groups
        raise ValueError(f"regular expression {value[:40]!r}... is too complex") from None
    return value


def _check_member(value: str) -> str:
    """A group member: a username, or `re:PATTERN`."""
    if value.startswith("re:"):
        _check_regex(value[3:])
    return value


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network: write e.g. 192.168.10.0/24 or 2001:db8::/48") from None


Regex = Annotated[str, AfterValidator(_check_regex)]
Member = Annotated[str, AfterValidator(_check_member)]
Cidr = Annotated[str, AfterValidator(_check_network)]
