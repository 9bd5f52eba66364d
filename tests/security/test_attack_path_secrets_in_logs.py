"""A secret in a path (a guest's booking link, a reset link) never reaches the logs.

Found by the attack on issue 8: the audit trail digests `audit.path_secrets`, but the
gateway's own log lines named the path in clear: a rate-limited guest link ("rate
limited"), an error or a dependency outage on one, an accepted reset whose user was
unknown. Anyone reading the logs could open the guest's booking page. Log lines now
show the path as the audit trail does.
"""

from __future__ import annotations

import yaml
from structlog.testing import capture_logs

from gateway.audit.path_secrets import path_for_logs
from gateway.policy import load_policy
from tests.login_env import login_env
from tests.security.hostile import send

SECRET = "k7Qm2xGuestLinkSecret"


async def test_a_rate_limited_guest_link_is_logged_without_its_secret(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"rate_limits": [{"path": "^/guest/", "key": "address", "rate": "1/minute"}]}))
    async with login_env(tmp_path, policy=load_policy("policies/default.yaml", overlay)) as env:
        with capture_logs() as logs:
            await send(env.url, "GET", f"/guest/booking/1001/{SECRET}", [])
            status, _ = await send(env.url, "GET", f"/guest/booking/1001/{SECRET}", [])
        assert status == 429
        limited = [entry for entry in logs if entry["event"] == "rate limited"]
        assert limited and limited[0]["path"].startswith("/guest/booking/1001/~")
        assert SECRET not in repr(logs)


def test_path_for_logs_digests_as_the_audit_does():
    patterns = load_policy("policies/default.yaml").audit.path_secrets
    assert SECRET not in path_for_logs(f"/password/reset/{SECRET}", patterns)
    assert path_for_logs("/reservations/1001", patterns) == "/reservations/1001"
