"""Who owns the network an address is in, and whether that makes it a hosting, VPN, proxy
or Tor address: the captcha's risk flags from free, offline data.

MaxMind's Anonymous-IP database is paid; a hotel with the free GeoLite2 files (or none)
still has three sources, all read locally on the login's path:

- the GeoLite2-ASN file (`geoip.asn`): the AS number and organisation of the address,
  classified against the shipped network list (`data/networks.yaml`: AS numbers and
  owner-name patterns of clouds, hosting companies, VPN operators) plus the policy's
  `risk.networks`;
- the Tor exit list, a file the operator refreshes (`pms-gateway risk tor-list update
  FILE`, stored in the data directory; nothing is downloaded at run time);
- RDAP answers the background lookup (`gateway.risk.rdap`) left in the ephemeral store:
  the network and registrant names, classified with the same list.

The paid Anonymous-IP file, when configured, still counts too. An address none of them
knows anything about is "unknown" (`Owner.known` false); what that means is the policy's
`captcha.on_unknown`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import structlog
import yaml

from gateway.policy.schema import NetworkOwnerRule, Policy
from gateway.risk.geoip import GeoLocator, is_public_address, parse_address

log = structlog.get_logger("gateway.risk")

SHIPPED_LIST = Path(__file__).parent / "data" / "networks.yaml"
TOR_LIST_NAME = "tor-exit-list.txt"
TOR_RECHECK = 10.0  # seconds between looks at the Tor list file's modification time


@dataclass(frozen=True, slots=True)
class Owner:
    """What the gateway knows about an address's network."""

    kinds: frozenset[str] = frozenset()  # of "hosting", "vpn", "proxy", "tor"
    name: str | None = None  # "AS15169 Google Inc." or an RDAP name
    sources: tuple[str, ...] = ()  # which of geoip, network list, tor list, rdap said so
    local: bool = False  # not a public address: the hotel's side, nothing to look up

    @property
    def known(self) -> bool:
        return self.local or bool(self.kinds) or self.name is not None


@dataclass(frozen=True)
class NetworkList:
    """AS numbers and owner-name patterns, each with its kind."""

    asns: dict[int, str] = field(default_factory=dict)
    names: tuple[tuple[re.Pattern[str], str], ...] = ()

    @classmethod
    def of(cls, rules: Iterable[NetworkOwnerRule]) -> NetworkList:
        asns: dict[int, str] = {}
        names: list[tuple[re.Pattern[str], str]] = []
        for rule in rules:
            if rule.asn is not None:
                asns[rule.asn] = rule.kind
            elif rule.name is not None:
                names.append((re.compile(rule.name, re.IGNORECASE), rule.kind))
        return cls(asns, tuple(names))

    def kinds(self, asn: int | None, names: Iterable[str | None]) -> set[str]:
        found = set()
        if asn is not None and asn in self.asns:
            found.add(self.asns[asn])
        for name in names:
            if name:
                found.update(kind for pattern, kind in self.names if pattern.search(name))
        return found


@cache
def shipped_rules() -> tuple[NetworkOwnerRule, ...]:
    """The list shipped in `data/networks.yaml` (read once per process)."""
    data = yaml.safe_load(SHIPPED_LIST.read_text(encoding="utf-8"))
    return tuple(NetworkOwnerRule.model_validate(entry) for entry in data["networks"])


def parse_tor_list(text: str) -> list[str]:
    """Addresses of Tor's public exit list, in either of its formats: the bulk list (one
    address a line, https://check.torproject.org/torbulkexitlist) or the detailed one
    (`ExitAddress 1.2.3.4 2024-01-01 00:00:00` lines, .../exit-addresses). Comments
    and other lines are skipped. Raises ValueError for a line that should be an address
    and is not, naming it, so an operator who fed the wrong file is told."""
    addresses = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "ExitAddress" and len(words) >= 2:
            candidate = words[1]
        elif len(words) == 1 and words[0] not in ("ExitNode", "Published", "LastStatus"):
            candidate = words[0]
        else:
            continue
        address = parse_address(candidate)
        if address is None:
            raise ValueError(f"line {number}: {candidate[:60]!r} is not an IP address")
        addresses.append(str(address))
    return addresses


def tor_list_path(data_dir: Path) -> Path:
    return data_dir / TOR_LIST_NAME


def install_tor_list(source: Path, data_dir: Path) -> int:
    """Check `source` and store its addresses as the gateway's Tor exit list (replaced
    atomically: a running gateway reads either the old list or the new one). Returns how
    many addresses it holds. Raises ValueError for an unreadable list."""
    addresses = sorted(set(parse_tor_list(source.read_text(encoding="utf-8", errors="replace"))))
    if not addresses:
        raise ValueError("no addresses found (expected Tor's exit list: one address a line, or ExitAddress lines)")
    target = tor_list_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    partial.write_text(f"# Tor exit list from {source.name}, installed {stamp}\n" + "\n".join(addresses) + "\n")
    os.replace(partial, target)
    return len(addresses)


class TorExits:
    """The stored exit list, re-read when the file changes (checked every TOR_RECHECK s)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._addresses: frozenset[str] = frozenset()
        self._mtime: float | None = None
        self._checked = float("-inf")

    def contains(self, ip: str) -> bool:
        now = self.clock()
        if now - self._checked >= TOR_RECHECK:
            self._checked = now
            self._reload()
        address = parse_address(ip)
        return address is not None and str(address) in self._addresses

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._addresses, self._mtime = frozenset(), None
            return
        if mtime == self._mtime:
            return
        try:
            self._addresses = frozenset(parse_tor_list(self.path.read_text(encoding="utf-8")))
            self._mtime = mtime
        except (OSError, ValueError) as exc:  # keep the last good list
            log.warning("Tor exit list unreadable; keeping the previous one", path=str(self.path), error=str(exc))


class NetworkOwners:
    """Owner and risk kinds of an address from every local source (see the module text).

    `rdap_names` is what the background lookup left for the address (or None); it comes
    from the caller, which read it from the ephemeral store, so this stays synchronous."""

    def __init__(self, geo: GeoLocator, tor: TorExits | None = None) -> None:
        self.geo = geo
        self.tor = tor
        self._lists: tuple[Policy | None, NetworkList] = (None, NetworkList())

    def network_list(self, policy: Policy) -> NetworkList:
        if self._lists[0] is not policy:
            self._lists = (policy, NetworkList.of([*shipped_rules(), *policy.risk.networks]))
        return self._lists[1]

    def owner(self, ip: str, policy: Policy, rdap_names: list[str] | None = None) -> Owner:
        address = parse_address(ip)
        if address is None or not is_public_address(address):
            return Owner(local=address is not None and not _is_special(address))
        kinds: set[str] = set()
        sources: list[str] = []
        if self.tor is not None and self.tor.contains(ip):
            kinds.add("tor")
            sources.append("tor list")
        info = self.geo.lookup(ip)
        flagged = {k for k, on in (("vpn", info.is_anonymous_vpn), ("tor", info.is_tor),
                                   ("hosting", info.is_hosting), ("proxy", info.is_public_proxy)) if on}
        if flagged:
            kinds |= flagged
            sources.append("geoip")
        listed = self.network_list(policy)
        by_asn = listed.kinds(info.asn, [info.asn_org])
        if by_asn:
            kinds |= by_asn
            sources.append("network list")
        name = f"AS{info.asn}" + (f" {info.asn_org}" if info.asn_org else "") if info.asn is not None else None
        if rdap_names:
            by_rdap = listed.kinds(None, rdap_names)
            if by_rdap:
                kinds |= by_rdap
                sources.append("rdap")
            name = name or rdap_names[0]
        return Owner(frozenset(kinds), name, tuple(sources))


def _is_special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Multicast, reserved, unspecified: not an address anyone logs in from."""
    return address.is_multicast or address.is_reserved or address.is_unspecified
