"""Login history and known IPs through `LoginHistory.record`, on SQLite and PostgreSQL:
new-address detection, IPv6 grouping, expiry after keep_for, and the operator commands
(`logins`, `ips`, `ips forget` with its permission check, recorded in the trail)."""

from __future__ import annotations

import asyncio
import getpass
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.audit.logins import LoginAttempt, LoginHistory
from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.verify import verify_trail
from gateway.cli import app
from gateway.config import GeoipSettings
from gateway.db import open_database
from gateway.policy.schema import KnownIpsPolicy, Policy
from gateway.risk.geoip import GeoLocator
from tests.test_audit_support import audit_stack

GEOIP = Path(__file__).parent / "data" / "geoip"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class RecordingAlerter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str]] = []

    async def new_ip_login(self, user, ip, geo=None, login_type=None, owner=None) -> bool:
        self.calls.append(("new_ip_login", user, ip))
        return True

    async def login(self, user, ip, geo=None, login_type=None) -> bool:
        return False

    async def lockout(self, user, ip, scope=None, geo=None) -> bool:
        self.calls.append(("lockout", user, ip))
        return True


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
async def history(database_url: str):
    database = await open_database(database_url)
    clock = Clock()
    alerter = RecordingAlerter()
    policy = Policy(known_ips=KnownIpsPolicy(keep_for=30 * 86400))
    geo = GeoLocator(GeoipSettings(city=GEOIP / "GeoIP2-City-Test.mmdb", asn=GEOIP / "GeoLite2-ASN-Test.mmdb"))
    try:
        yield LoginHistory(database, geo, lambda: policy, alerter, clock=clock), clock, alerter
    finally:
        await database.close()


async def test_new_addresses_known_addresses_and_expiry(history) -> None:
    logins, clock, alerter = history

    async def attempt(ip: str, outcome: str = "success", user: str = "alice"):
        return await logins.record(LoginAttempt(user, ip, outcome, "password+totp", device_id="d1"))

    first = await attempt("81.2.69.160")
    assert first.new_ip and first.first_login and (first.city, first.country) == ("London", "GB")
    assert alerter.calls == []  # no alert for the very first login (new_ip_on_first_login: false)
    again = await attempt("81.2.69.160")
    assert not again.new_ip and not again.first_login
    failed = await attempt("89.160.20.112", "failure")
    assert failed.new_ip and failed.asn == 29518 and alerter.calls == []  # failures never alert as new
    second = await attempt("89.160.20.112")
    assert second.new_ip and second.alerted and alerter.calls == [("new_ip_login", "alice", "89.160.20.112")]
    assert not (await attempt("89.160.20.112")).new_ip
    # IPv6: one /64 is one known address
    assert (await attempt("2001:db8:1:2::10")).new_ip
    assert not (await attempt("2001:db8:1:2:ffff::99")).new_ip
    assert (await attempt("2001:db8:1:3::10")).new_ip
    # unused for longer than keep_for: new again
    clock.now += 31 * 86400
    assert (await attempt("81.2.69.160")).new_ip
    locked = await attempt("81.2.69.160", "locked_out", user="mallory")
    assert locked.new_ip and ("lockout", "mallory", "81.2.69.160") in alerter.calls


async def test_concurrent_first_logins_from_one_address(history) -> None:
    logins, _, _ = history
    records = await asyncio.gather(*(
        logins.record(LoginAttempt("carol", "192.0.2.7", "success", "password+totp")) for _ in range(5)))
    assert all(r.id for r in records)
    assert not (await logins.record(LoginAttempt("carol", "192.0.2.7", "success", "password+totp"))).new_ip


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def test_operator_commands(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "groups:\n"
        "  it: {members: [root]}\n"
        "  frontdesk: {members: ['re:^desk']}\n"
    )
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": f"[{policy_file}]",
           "PMS_GATEWAY_INSTANCE_ID": "gw-test"}
    async with audit_stack(tmp_path) as stack:
        logins = stack.services.login_history
        await logins.record(LoginAttempt("alice", "81.2.69.160", "success", "password+totp"))
        await logins.record(LoginAttempt("alice", "2001:db8::5", "success", "password+security_key"))
        await logins.record(LoginAttempt("bob", "89.160.20.112", "failure", None, reason="password refused"))

    code, output = await asyncio.to_thread(run_cli, env, "logins")
    assert code == 0 and output.splitlines()[0].split() == ["AT", "USER", "IP", "PLACE", "OUTCOME", "TYPE", "NEW", "IP", "NETWORK", "OWNER"]
    assert "bob" in output and "failure" in output and "password+security_key" in output
    code, output = await asyncio.to_thread(run_cli, env, "logins", "--user", "ALICE ")  # normalised
    assert code == 0 and "bob" not in output and output.count("alice") == 2
    code, output = await asyncio.to_thread(run_cli, env, "ips", "--user", "alice")
    assert code == 0 and "2001:db8::/64" in output and "81.2.69.160" in output

    # On the host the command line needs no console permission: the OS user is recorded.
    code, output = await asyncio.to_thread(run_cli, env, "ips", "forget", "alice", "2001:db8::77", "--operator", "root")
    assert code == 0 and "forgot 2001:db8::/64 for alice" in output
    code, output = await asyncio.to_thread(run_cli, env, "ips")
    assert "2001:db8::/64" not in output and "81.2.69.160" in output

    async with audit_stack(tmp_path) as stack:
        reader = AuditReader(stack.database, stack.services.keys)
        (record,) = [r async for r in reader.records(QueryFilter(decision="forget_known_ip"))]
        assert record["user"] == f"os:{getpass.getuser()} as root" and record["channel"] == "admin"
        assert record["identifiers"] == {"user": "alice", "ip": "2001:db8::77"}
        assert (await verify_trail(stack.database, stack.services.keys)).ok
