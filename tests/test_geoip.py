"""GeoLocator against MaxMind's published test databases (tests/data/geoip, see its licences):
every "nothing known" case must answer quietly, never raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GeoipSettings
from gateway.risk.geoip import UNKNOWN, GeoInfo, GeoLocator

DATA = Path(__file__).parent / "data" / "geoip"


def settings(**overrides: object) -> GeoipSettings:
    values: dict[str, object] = {
        "city": DATA / "GeoIP2-City-Test.mmdb",
        "asn": DATA / "GeoLite2-ASN-Test.mmdb",
        "anonymous_ip": DATA / "GeoIP2-Anonymous-IP-Test.mmdb",
    }
    values.update(overrides)
    return GeoipSettings.model_validate(values)


@pytest.fixture
def geo() -> GeoLocator:
    locator = GeoLocator(settings())
    yield locator
    locator.close()


def test_city_country_and_anonymous_flags(geo: GeoLocator) -> None:
    info = geo.lookup("81.2.69.160")
    assert (info.city, info.country, info.place) == ("London", "GB", "London, GB")
    assert info.is_anonymous_vpn and info.is_tor and info.is_hosting and info.is_public_proxy


@pytest.mark.parametrize(
    ("ip", "flag"),
    [("1.2.0.1", "is_anonymous_vpn"), ("65.0.0.1", "is_tor"), ("71.160.223.1", "is_hosting"),
     ("186.30.236.1", "is_public_proxy")],
)
def test_single_anonymity_flags(geo: GeoLocator, ip: str, flag: str) -> None:
    info = geo.lookup(ip)
    flags = {f: getattr(info, f) for f in ("is_anonymous_vpn", "is_tor", "is_hosting", "is_public_proxy")}
    assert flags == {f: f == flag for f in flags}
    assert info.is_anonymous


def test_asn_with_and_without_organisation(geo: GeoLocator) -> None:
    linkoping = geo.lookup("89.160.20.112")
    assert (linkoping.city, linkoping.country, linkoping.asn, linkoping.asn_org) == (
        "Linköping", "SE", 29518, "Bredband2 AB")
    assert not linkoping.is_anonymous  # absent from the Anonymous-IP file
    milton = geo.lookup("216.160.83.56")
    assert (milton.city, milton.asn, milton.asn_org) == ("Milton", 209, None)


def test_address_absent_everywhere_and_all_false_record(geo: GeoLocator) -> None:
    info = geo.lookup("8.8.8.8")
    assert info.country is None and info.city is None and info.asn is None
    assert not info.is_anonymous and info.place is None


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.0.0.1", "192.168.1.20", "::1", "fe80::1%eth0", "not-an-ip", ""])
def test_private_loopback_and_garbage_are_unknown(geo: GeoLocator, ip: str) -> None:
    assert geo.lookup(ip) == UNKNOWN


def test_ipv4_mapped_ipv6_is_unwrapped(geo: GeoLocator) -> None:
    assert geo.lookup("::ffff:81.2.69.160").city == "London"


def test_missing_and_unconfigured_files(tmp_path: Path) -> None:
    none = GeoLocator(GeoipSettings())
    assert not none.enabled and none.lookup("81.2.69.160") == UNKNOWN
    missing = GeoLocator(settings(city=tmp_path / "absent.mmdb", anonymous_ip=None))
    info = missing.lookup("89.160.20.112")
    assert info == GeoInfo(asn=29518, asn_org="Bredband2 AB")
    (tmp_path / "junk.mmdb").write_bytes(b"not a database")
    assert not GeoLocator(GeoipSettings(city=tmp_path / "junk.mmdb")).enabled


def test_wrong_database_type_is_not_fatal() -> None:
    swapped = GeoLocator(settings(city=DATA / "GeoLite2-ASN-Test.mmdb", asn=None, anonymous_ip=None))
    assert swapped.lookup("89.160.20.112") == UNKNOWN


def test_lookups_are_cached(geo: GeoLocator) -> None:
    first = geo.lookup("2.125.160.216")
    assert first.city == "Boxford" and geo.lookup("2.125.160.216") is first
