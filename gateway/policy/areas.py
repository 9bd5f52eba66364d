"""The parts of a PMS that are not for signed-in staff: public guest areas and API clients.

Every request is exactly one kind (DESIGN.md, "What the gateway tells apart"). Besides
staff requests and the login, a real PMS has

- public guest areas (`public_areas:`): a booking engine, a guest portal, the order page a
  confirmation e-mail links to. Guests have no gateway session; these paths are forwarded
  without one, never with a staff session's vaulted cookies, and audited under the
  area's label;
- API clients (`api_clients:`): integrations (channel manager, door locks, accounting)
  that call the PMS's API with a token and cannot do a second factor. Each is named,
  limited to its paths, methods and source networks (mandatory), rate-limited, and
  recognised by a token the gateway issued (`gateway_token`) or by a header the PMS's own
  token fits (`header_pattern`).

Kept apart from `schema.py` so these sections read as one thing; the enforcement is
`gateway.access.api_clients` and the session guard.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from gateway.policy.rate_limits import Rate
from gateway.policy.types import NetworkRef, Regex, Section, method_listed

Recognition = Literal["gateway_token", "header_pattern"]
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
API_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name")
    if value.lower() in ("cookie", "host", "content-length", "transfer-encoding"):
        raise ValueError(f"{value!r} cannot carry an API client's token")
    return value


def _upper(methods: list[str]) -> list[str]:
    return [m.upper() for m in methods]


HeaderName = Annotated[str, AfterValidator(check_header_name)]


class PublicArea(Section):
    paths: list[Regex] = Field(
        min_length=1,
        description="Regular expressions searched in the canonical path (anchor them: `^/guest/`).",
    )


class ApiClient(Section):
    paths: list[Regex] = Field(
        min_length=1, description="Paths this client may call (anchored regular expressions, e.g. `^/api/v1/`)."
    )
    methods: Annotated[list[str], AfterValidator(_upper)] = Field(
        [], description="HTTP methods this client may use; empty = every method."
    )
    networks: list[NetworkRef] = Field(
        min_length=1,
        description="Network names or CIDRs the client calls from (mandatory: a token alone is not enough).",
    )
    rate_limit: Rate = Field(
        "300/minute", description='Requests allowed per period for this client ("600/minute", "10 per second").'
    )
    recognition: Recognition = Field(
        "gateway_token",
        description="`gateway_token`: a token from `pms-gateway api-clients add`, which the gateway strips "
        "(and replaces with the PMS credential stored for the client, if any); `header_pattern`: the PMS's "
        "own token, recognised by `header` matching `pattern`, forwarded as sent.",
    )
    token_header: HeaderName = Field(
        "Authorization",
        description="For `gateway_token`: the header carrying it (`Authorization: Bearer pgw_...`, or the token "
        "alone in another header). Never accepted in the query string.",
    )
    header: HeaderName | None = Field(None, description="For `header_pattern`: the header the PMS token is in.")
    pattern: Regex | None = Field(
        None, description="For `header_pattern`: regular expression the whole header value must match."
    )

    @model_validator(mode="after")
    def _recognition_complete(self) -> ApiClient:
        if self.recognition == "header_pattern" and (self.header is None or self.pattern is None):
            raise ValueError("`recognition: header_pattern` needs `header` and `pattern`")
        if self.recognition == "gateway_token" and (self.header is not None or self.pattern is not None):
            raise ValueError("`header` and `pattern` are for `recognition: header_pattern`")
        return self


def check_api_client_name(name: str) -> str:
    if not API_CLIENT_NAME.match(name):
        raise ValueError(
            f"{name!r}: an API client's name is lower-case letters, digits, '.', '_' and '-' (at most 63)"
        )
    return name


ApiClientName = Annotated[str, AfterValidator(check_api_client_name)]


def _join(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


@dataclass(frozen=True, slots=True)
class CompiledClient:
    name: str
    rule: ApiClient
    paths: re.Pattern[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    header_pattern: re.Pattern[str] | None

    def allows_request(self, method: str, path: str) -> bool:
        return method_listed(method, self.rule.methods) and self.paths.search(path) is not None

    def allows_address(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class CompiledAreas:
    """The policy's public areas and API clients, compiled once per policy object."""

    def __init__(
        self,
        areas: dict[str, PublicArea],
        clients: dict[str, ApiClient],
        expand: Callable[[list[str]], list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
    ) -> None:
        """`expand` turns network names and CIDRs into networks (`Policy.expand_networks`)."""
        self.areas = tuple((label, _join(area.paths)) for label, area in areas.items())
        self.clients = {
            name: CompiledClient(
                name, rule, _join(rule.paths),
                tuple(expand(rule.networks)),
                re.compile(rule.pattern) if rule.pattern is not None else None,
            )
            for name, rule in clients.items()
        }
        every_api_path = [p for rule in clients.values() for p in rule.paths]
        self.api_paths = _join(every_api_path) if every_api_path else None

    def public_area_of(self, path: str) -> str | None:
        """The label of the public area `path` is in, or None."""
        for label, pattern in self.areas:
            if pattern.search(path) is not None:
                return label
        return None

    def is_api_path(self, path: str) -> bool:
        return self.api_paths is not None and self.api_paths.search(path) is not None
