"""Strict mode's every-login alerts (issue 15, item 1), over real logins (password + TOTP)
at a real gateway and a real SMTP server: N logins of one user from one address within
minutes send N alerts, never deduplicated; past `alerts.max_per_hour` the rest are held
back, and one summary naming them goes out as soon as the cap has room again."""

from __future__ import annotations

from pathlib import Path

from gateway.notify.throttle import AlertThrottle
from gateway.policy.schema import AlertsPolicy
from tests.login_env import Browser, FakeClock, login_env
from tests.test_alerts import smtp, wait_for  # noqa: F401 (fixture)
from tests.test_strict_policy import STRICT

CAP = 4
LOGINS = 6


async def test_each_login_alerts_up_to_the_cap_then_one_summary(smtp, tmp_path: Path) -> None:  # noqa: F811
    inbox, port = smtp
    alerts = STRICT.alerts.model_dump(exclude_unset=True) | {"email_to": ["it@hotel.example"], "max_per_hour": CAP}
    policy = STRICT.model_copy(update={"alerts": AlertsPolicy(**alerts)})
    assert policy.alerts.min_interval == 600  # dedup of other kinds stays on: these logins are minutes apart
    overrides = {"smtp__host": "127.0.0.1", "smtp__port": str(port), "smtp__sender": "gateway@hotel.example"}
    async with login_env(tmp_path, policy=policy, config_overrides=overrides) as env:
        alerter = env.services.audit.alerter
        hour = FakeClock()  # the throttle's clock, so the test can let an hour pass
        alerter.throttle = AlertThrottle(hour)
        browser = Browser(env)
        try:
            await browser.password("alice")
            await browser.enroll("alice")  # login 1
            for _ in range(LOGINS - 1):  # logins 2..6, from the same address, within minutes
                status, _, page = await browser.login("alice")
                assert status in (302, 303), page
            await wait_for(inbox, CAP)
            subjects = [m["Subject"] for m in inbox.messages]
            assert subjects == ["Sign-in by alice from 127.0.0.1"] * CAP
            assert alerter.throttle.suppressed == LOGINS - CAP

            assert not await alerter.send_held()  # the cap is still full: nothing yet
            hour.advance(3601)
            assert await alerter.send_held()
            await wait_for(inbox, CAP + 1)
            assert not await alerter.send_held()  # sent once
        finally:
            await browser.close()
    assert len(inbox.messages) == CAP + 1
    summary = inbox.messages[-1]
    assert summary["Subject"] == "Alerts held back by the hourly cap"
    body = summary.get_content()
    assert f"{LOGINS - CAP} further alert(s) were not sent" in body
    assert f"every_login: alice from 127.0.0.1 x{LOGINS - CAP}" in body


async def test_a_held_back_alert_rides_with_the_next_one_that_goes_out(smtp) -> None:  # noqa: F811
    """When an alert goes out before the summary would, it carries the list: no summary."""
    from gateway.config import SmtpSettings
    from gateway.notify.alerter import Alerter
    from gateway.notify.email import EmailSender
    from gateway.policy.schema import Policy

    inbox, port = smtp
    policy = Policy(alerts=AlertsPolicy(email_to=["it@hotel.example"], max_per_hour=1, on=["every_login", "lockout"]))
    clock = FakeClock()
    alerter = Alerter(lambda: policy, EmailSender(SmtpSettings(host="127.0.0.1", port=port),
                                                  lambda: policy.alerts.email_to), clock=clock)
    try:
        assert await alerter.login("alice", "192.0.2.1")
        await alerter.drain()  # out before the next are held back
        assert not await alerter.login("alice", "192.0.2.1")
        assert not await alerter.login("bob", "192.0.2.2")
        clock.advance(3601)
        assert await alerter.lockout("carol", "192.0.2.3", "user")
        await alerter.drain()
        assert not await alerter.send_held()
        await alerter.drain()
    finally:
        await alerter.close()
    assert [m["Subject"] for m in inbox.messages] == [
        "Sign-in by alice from 192.0.2.1", "Sign-in lockout for carol from 192.0.2.3"]
    body = inbox.messages[1].get_content()
    assert "2 further alert(s) were not sent" in body
    assert "every_login: alice from 192.0.2.1 x1" in body and "every_login: bob from 192.0.2.2 x1" in body
