"""Where an address is: country, city, network owner, and whether it hides someone.

The audit trail, the login history and the new-address alerts all want to say "from
London, AS29518"; the risk checks want "this is a VPN / Tor exit / hosting provider".
MaxMind's databases answer both. Each file is optional: a deployment without the paid
Anonymous-IP file still gets cities, one without any file gets empty answers, and a lookup
never raises: a missing record, a private address or a record whose flags are all false
simply means "nothing known".

Lookups are cached (staff use a handful of addresses all day), so calling `lookup` on
every request is cheap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from gateway.config import GeoipSettings

log = structlog.get_logger("gateway.geoip")

CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """What is known about one address; every field None/False when nothing is."""

    country: str | None = None  # ISO 3166 alpha-2, e.g. "GB"
    city: str | None = None  # English name
    asn: int | None = None
    asn_org: str | None = None
    is_anonymous_vpn: bool = False
    is_tor: bool = False
    is_hosting: bool = False
    is_public_proxy: bool = False

    @property
    def is_anonymous(self) -> bool:
        return self.is_anonymous_vpn or self.is_tor or self.is_hosting or self.is_public_proxy

    @property
    def place(self) -> str | None:
        """"London, GB", "GB" or None: how alerts and listings name the location."""
        if self.city and self.country:
            return f"{self.city}, {self.country}"
        return self.city or self.country


UNKNOWN = GeoInfo()


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Only public addresses are worth a database lookup; the rest are never listed."""
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


def parse_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `value`, IPv4-mapped IPv6 unwrapped, zone dropped; None if not an IP."""
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0].strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class GeoLocator:
    """Cached lookups in whichever of the City, ASN and Anonymous-IP files are configured."""

    def __init__(self, settings: GeoipSettings) -> None:
        self._city = _open(settings.city, "city")
        self._asn = _open(settings.asn, "asn")
        self._anonymous = _open(settings.anonymous_ip, "anonymous_ip")
        self._cached = lru_cache(maxsize=CACHE_SIZE)(self._lookup)

    @property
    def enabled(self) -> bool:
        return any(r is not None for r in (self._city, self._asn, self._anonymous))

    def lookup(self, ip: str) -> GeoInfo:
        """What the configured files know about `ip` (never raises)."""
        return self._cached(ip)

    def _lookup(self, ip: str) -> GeoInfo:
        address = parse_address(ip)
        if address is None or not is_public_address(address) or not self.enabled:
            return UNKNOWN
        text = str(address)
        fields: dict[str, Any] = {}
        if (city := _query(self._city, "city", text)) is not None:
            fields["country"] = city.country.iso_code or city.registered_country.iso_code
            fields["city"] = city.city.name
        if (asn := _query(self._asn, "asn", text)) is not None:
            fields["asn"] = asn.autonomous_system_number
            fields["asn_org"] = asn.autonomous_system_organization
        if (anonymous := _query(self._anonymous, "anonymous_ip", text)) is not None:
            fields["is_anonymous_vpn"] = bool(anonymous.is_anonymous_vpn)
            fields["is_tor"] = bool(anonymous.is_tor_exit_node)
            fields["is_hosting"] = bool(anonymous.is_hosting_provider)
            fields["is_public_proxy"] = bool(anonymous.is_public_proxy)
        return GeoInfo(**fields) if fields else UNKNOWN

    def close(self) -> None:
        for reader in (self._city, self._asn, self._anonymous):
            if reader is not None:
                reader.close()
        self._cached.cache_clear()


def _open(path: Path | None, kind: str) -> Any:
    """A geoip2 Reader, or None when the file is not configured or cannot be read."""
    if path is None:
        return None
    import geoip2.database
    from maxminddb import InvalidDatabaseError

    try:
        return geoip2.database.Reader(str(path))
    except (OSError, ValueError, InvalidDatabaseError) as exc:
        # Starting without geolocation beats not starting: the trail still has the IP.
        log.warning("GeoIP database unusable; lookups without it", kind=kind, path=str(path), error=str(exc))
        return None


def _query(reader: Any, method: str, ip: str) -> Any:
    if reader is None:
        return None
    import geoip2.errors

    try:
        return getattr(reader, method)(ip)
    except geoip2.errors.AddressNotFoundError:
        return None
    except (ValueError, TypeError) as exc:  # wrong database type for the method, bad address
        log.warning("GeoIP lookup failed", method=method, error=str(exc))
        return None
