"""The `rate_limits:` section of the policy: how often one key may use one kind of request.

A rule names what it counts (a path pattern and methods, or the login form itself), whose
requests count together (`key`), how many are allowed (`rate`, in the notation of the
`limits` library that enforces it) and how the period is read (`strategy`). The rules
apply independently: a request is refused as soon as one rule it falls under is spent.

Kept apart from `schema.py` so the rules and their defaults read as one thing; the
enforcement is `gateway.risk.rate_limits`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import limits
from pydantic import AfterValidator, Field, model_validator

from gateway.policy.types import Regex, Section

RateKey = Literal["user", "session", "address", "api_client"]
Strategy = Literal["moving-window", "fixed-window"]


def _check_rate(value: str) -> str:
    """One rate in `limits` notation ("10/minute", "100 per hour", "5/10 seconds")."""
    if ";" in value or "," in value:
        raise ValueError(f"{value!r}: one rate per rule; write a second rule for a second rate")
    try:
        item = limits.parse(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate: write e.g. 10/minute, 100 per hour or 5/10 seconds"
        ) from None
    if item.amount < 1:
        raise ValueError(f"{value!r}: allow at least one request per period")
    return value


Rate = Annotated[str, AfterValidator(_check_rate)]


def _upper(methods: list[str]) -> list[str]:
    return [m.upper() for m in methods]


class RateLimitRule(Section):
    path: Regex | None = Field(
        None, description="Regular expression searched in the canonical path (anchor it: `^/reports/`)."
    )
    login: bool = Field(
        False, description="Count the login form instead of `path` (`login.path` with `login.method`)."
    )
    password_reset: bool = Field(
        False,
        description="Count the forms that ask for a password-reset link instead of `path` (`request_path` of "
        "the `reset` forms under `login.password_forms`, with their `request_method`).",
    )
    methods: Annotated[list[str], AfterValidator(_upper)] = Field(
        [], description="HTTP methods counted; empty = every method."
    )
    key: RateKey = Field(
        "address",
        description="Whose requests count together: `address` (the client's IPv4 address or IPv6 /64), `user` "
        "(the session's user; on the login form, the username tried), `session`, or `api_client`. A request "
        "without that key (no session, say) is not counted by the rule. On the gateway's own pages "
        "(`/_gateway/...`) only `address` rules apply.",
    )
    rate: Rate = Field(description='Requests allowed per period: "10/minute", "100 per hour", "5/10 seconds".')
    strategy: Strategy = Field(
        "moving-window",
        description="`moving-window`: at most `rate` in any span of the period; `fixed-window`: the count "
        "starts with the first request and resets, whole, a period later (cheaper, allows bursts at the edge).",
    )

    @model_validator(mode="after")
    def _one_target(self) -> RateLimitRule:
        if (self.path is not None) + self.login + self.password_reset != 1:
            raise ValueError("a rate limit needs exactly one of `path`, `login: true` or `password_reset: true`")
        if (self.login or self.password_reset) and self.methods:
            raise ValueError("`login: true` and `password_reset: true` count their forms' own methods: leave `methods` out")
        return self


DEFAULT_RATE_LIMITS = [
    RateLimitRule(login=True, key="address", rate="60/minute"),
    RateLimitRule(login=True, key="user", rate="20/minute"),
    RateLimitRule(path="^/_gateway/(2fa|captcha)$", methods=["POST"], key="address", rate="60/minute"),
    RateLimitRule(password_reset=True, key="address", rate="10/hour"),
]
