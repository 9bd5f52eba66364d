"""Small validated value types shared by the policy and config schemas."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

NETWORK_NAMES = "network_names"  # validation-context key: the names under `networks:` (set by the loader)


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


def network_ref_problem(ref: str, known: set[str] | frozenset[str]) -> str | None:
    """Why `ref` (a name under `networks:` or a CIDR) is not usable, or None."""
    if ref in known:
        return None
    try:
        ipaddress.ip_network(ref, strict=False)
    except ValueError:
        names = ", ".join(sorted(known)) or "none"
        return f"{ref!r} is neither a name under `networks:` nor a CIDR (names defined: {names})"
    return None


def _check_network_ref(value: str, info: ValidationInfo) -> str:
    """Checked item by item when the loader passes the defined names, so the error names
    the exact key and line; Policy's own check covers policies built in code."""
    known = (info.context or {}).get(NETWORK_NAMES)
    if known is not None and (problem := network_ref_problem(value, known)):
        raise ValueError(problem)
    return value


NetworkRef = Annotated[str, AfterValidator(_check_network_ref)]


def method_listed(method: str, methods: list[str] | tuple[str, ...]) -> bool:
    """Whether a rule's `methods` (empty: every method) cover a request's method. GET
    covers HEAD: servers answer HEAD with the GET handler (its side effects, its headers),
    so a rule about GET that HEAD escaped would be a rule about the body only."""
    return not methods or method in methods or (method == "HEAD" and "GET" in methods)
