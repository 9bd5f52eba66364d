"""Known-IP expiry edges (issue 15, item 4): an address past `known_ips.keep_for` is gone
from listings at once (no purge needed), and a user whose known addresses all expired is
not "signing in for the first time": the login alerts as a new address, because "first
login" means no login history at all."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.known_ips import list_known
from gateway.audit.logins import LoginAttempt, LoginHistory
from gateway.policy.schema import KnownIpsPolicy, Policy
from tests.test_audit_logins import Clock, RecordingAlerter, database_url, history, run_cli  # noqa: F401 (fixtures)
from tests.test_audit_support import audit_stack

DAY = 86400.0


async def test_expired_known_address_re_alerts_for_a_user_with_history(history) -> None:  # noqa: F811
    logins, clock, alerter = history  # keep_for: 30 days

    async def login(ip: str, user: str = "alice"):
        return await logins.record(LoginAttempt(user, ip, "success", "password+totp"))

    first = await login("81.2.69.160")
    assert first.first_login and not first.alerted and alerter.calls == []
    clock.now += 31 * DAY  # the only known address expires
    assert await list_known(logins.database, 30 * DAY, datetime.fromtimestamp(clock.now, UTC), "alice") == []
    again = await login("81.2.69.160")
    assert again.new_ip and not again.first_login and again.alerted
    assert alerter.calls == [("new_ip_login", "alice", "81.2.69.160")]
    listed = await list_known(logins.database, 30 * DAY, datetime.fromtimestamp(clock.now, UTC), "alice")
    assert [k.ip_prefix for k in listed] == ["81.2.69.160"]
    assert listed[0].first_seen > datetime.fromtimestamp(clock.now - 60, UTC)  # known again from now on


async def test_failures_do_not_make_a_history(history) -> None:  # noqa: F811
    """Only a successful login counts as history: a user whose only attempts failed is
    still at their first login (no alert unless new_ip_on_first_login)."""
    logins, _, alerter = history
    await logins.record(LoginAttempt("bob", "81.2.69.160", "failure", None))
    record = await logins.record(LoginAttempt("bob", "89.160.20.112", "success", "password+totp"))
    assert record.first_login and record.new_ip and alerter.calls == []


async def test_ips_listing_filters_by_keep_for_before_any_purge(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("known_ips: {keep_for: 30d}\n")
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": f"[{policy_file}]",
           "PMS_GATEWAY_INSTANCE_ID": "gw-test"}
    now = datetime.now(UTC).timestamp()
    policy = Policy(known_ips=KnownIpsPolicy(keep_for=30 * DAY))
    async with audit_stack(tmp_path) as stack:
        for ip, age in (("81.2.69.160", 31 * DAY), ("89.160.20.112", 29 * DAY)):
            history = LoginHistory(stack.database, None, lambda: policy, None, clock=lambda age=age: now - age)
            await history.record(LoginAttempt("alice", ip, "success", "password+totp"))
        listed = await list_known(stack.database, 30 * DAY, datetime.now(UTC))
        assert [k.ip_prefix for k in listed] == ["89.160.20.112"]
        everything = await list_known(stack.database, 3650 * DAY, datetime.now(UTC))
        assert len(everything) == 2  # still in the table: only the listing filters
    code, output = await asyncio.to_thread(run_cli, env, "ips")
    assert code == 0, output
    assert "89.160.20.112" in output and "81.2.69.160" not in output
