"""One spelling per client address: `::ffff:a.b.c.d` (what a dual-stack socket or a proxy
reports) is the IPv4 address for every feature, so a group's IPv4 ranges, lockouts and
known IPs cannot be sidestepped, or wrongly refused, by the other spelling."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.schema import GroupPolicy, Policy
from gateway.proxy.client_ip import ClientResolver, canonical_address


def test_mapped_peer_and_forwarded_hops_are_ipv4():
    resolver = ClientResolver(["10.0.0.0/8"])
    assert resolver.resolve("::ffff:192.0.2.7", None) == "192.0.2.7"
    assert resolver.resolve("::ffff:10.0.0.2", "198.51.100.1, ::ffff:10.0.0.3") == "198.51.100.1"
    assert resolver.resolve("10.0.0.2", "[::FFFF:203.0.113.9]") == "203.0.113.9"
    assert resolver.resolve("2001:DB8:0:0::1", None) == "2001:db8::1"


def test_group_network_sees_the_ipv4_spelling():
    policy = Policy(networks={"lan": ["192.168.10.0/24"]}, groups={"reception": GroupPolicy(networks=["lan"])})
    resolver = ClientResolver([])
    assert policy.network_allows("reception", resolver.resolve("::ffff:192.168.10.5", None))
    assert not policy.network_allows("reception", resolver.resolve("::ffff:192.168.11.5", None))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.sampled_from(["", "%eth0"]))
def test_canonical_address_is_one_spelling(address, zone):
    text = canonical_address(str(address).upper() + zone)
    assert canonical_address(text) == text  # idempotent
    parsed = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        assert parsed == address.ipv4_mapped
    else:
        assert parsed == address


@given(st.text(max_size=40))
def test_canonical_address_never_raises(text):
    canonical_address(text)
