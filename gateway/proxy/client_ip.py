"""Who is really asking: the client address and scheme, believing only trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)  # a pure function of the text: the same few peers ask all day
def canonical_address(address: str) -> str:
    """One spelling per address, so every feature (lockouts, group networks, known IPs,
    audit) keys on the same text: IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack
    socket reports) becomes the IPv4 address, IPv6 is compressed and lower-case, a zone
    index is dropped. Text that is no address is returned unchanged (and matches nothing)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        ip = _address(canonical_address(address))
        return ip is not None and any(ip in net for net in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The right-most address of X-Forwarded-For that is not a trusted proxy.

        Only consulted when the TCP peer itself is a trusted proxy; otherwise the header is
        the client's own claim and is ignored (and replaced when forwarding).
        """
        peer = canonical_address(peer or "0.0.0.0")
        if not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            candidate = hop.strip("[]")
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                return peer  # a malformed chain proves nothing
            if not self._is_trusted(candidate):
                return canonical_address(candidate)
        return canonical_address(hops[0].strip("[]")) if hops else peer

    def scheme(self, peer: str | None, tls: bool, forwarded_proto: str | None) -> str:
        if tls:
            return "https"
        if forwarded_proto and peer and self._is_trusted(peer):
            proto = forwarded_proto.split(",")[-1].strip().lower()  # the proxy's own, as for the host
            if proto in ("http", "https"):
                return proto
        return "http"

    def forwarded_host(self, peer: str | None, host: str, forwarded_host: str | None) -> str:
        """The host a trusted proxy says the browser asked for: the right-most value, the one
        that proxy wrote (Apache's mod_proxy appends to a client's own X-Forwarded-Host)."""
        if forwarded_host and peer and self._is_trusted(peer):
            return forwarded_host.split(",")[-1].strip()
        return host
