"""Which network a client address stands for: the one key every per-address feature uses.

An IPv6 client controls at least a /64 (privacy extensions rotate the rest hourly, and
any host may pick from 2**64 addresses), so counting failures per /128 lets one attacker
make unlimited fresh "addresses". An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
dual-stack socket reports) is the IPv4 host it wraps. `network_key` therefore maps an
address to the IPv4 address or to its IPv6 network of `known_ips.ipv6_prefix` bits, and
lockouts, captcha triggers, captcha issue limits and known IPs all key on it.

The hotel's own networks (`captcha.known_networks`, or every network under `networks:`)
are where a lockout would hurt the hotel itself; `KnownNetworks` answers "is this address
inside them" for the captcha gate and the lockouts alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

import structlog

from gateway.policy.schema import Policy
from gateway.risk.geoip import parse_address

log = structlog.get_logger("gateway.risk")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)  # every request asks (rate limits, lockouts); a hotel has few addresses at a time
def network_key(ip: str, ipv6_prefix: int) -> str:
    """The IPv4 address (mapped IPv6 unwrapped) or the IPv6 /`ipv6_prefix` network of `ip`.

    A value that is not an address (a unix socket peer, say) is kept as it is, cut to 64
    characters: it is still one client, and it must never widen to everyone."""
    address = parse_address(ip)
    if address is None:
        return ip[:64]
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False))


def client_key(ip: str, policy: Policy) -> str:
    """`network_key` under the policy's `known_ips.ipv6_prefix`."""
    return network_key(ip, policy.known_ips.ipv6_prefix)


def known_networks(policy: Policy) -> list[Network]:
    """`captcha.known_networks` (names or CIDRs), or every named network when empty.
    A name that is neither is skipped (and logged): its addresses then count as unknown."""
    names = policy.captcha.known_networks or list(policy.networks)
    result = []
    for name in names:
        for cidr in policy.networks.get(name, [name]):
            try:
                result.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                log.warning("captcha.known_networks: not a network name or CIDR", value=name)
    return result


class KnownNetworks:
    """`known_networks(policy)`, computed once per policy object (policies reload whole;
    the policy itself is held, so a new one can never be mistaken for it)."""

    def __init__(self) -> None:
        self._cached: tuple[Policy | None, Sequence[Network]] = (None, ())

    def contains(self, ip: str, policy: Policy) -> bool:
        if self._cached[0] is not policy:
            self._cached = (policy, tuple(known_networks(policy)))
        address = parse_address(ip)
        return address is not None and any(address in net for net in self._cached[1])
