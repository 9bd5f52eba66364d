"""Per-group session overrides are typed values: a group's `idle_timeout: 1m` works.

Overrides used to be merged back from their text form, so a group with any duration
override answered 500 to every request of its users. These tests load overrides the way
an operator writes them (YAML text) and drive real requests of that group's users.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import load_policy
from gateway.policy.schema import Policy, SessionPolicy
from tests.login_env import Browser, login_env

_DURATIONS = st.sampled_from(["30s", "1m", "90s", "2h", "1d", "45s", "600.5s"])  # policy files need units
_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "idle_timeout": _DURATIONS,
        "max_lifetime": _DURATIONS,
        "max_devices": st.integers(1, 5),
        "on_new_device": st.sampled_from(["replace", "refuse"]),
        "remember_device": st.one_of(st.just(False), _DURATIONS),
        "bind_to_ip": st.booleans(),
        "idle_ignore_paths": st.just(["^/api/refresh$"]),
    },
)


_MEMBERS = '    members: [alice, bob, "re:^frontdesk-"]'


def _policy_with(overrides: dict, tmp_path: Path) -> Policy:
    """The default policy with `overrides` written (as YAML text, the operator's way) into
    the reception group, loaded by the real loader."""
    source = open("policies/default.yaml").read()
    assert _MEMBERS in source
    path = tmp_path / "policy.yaml"
    path.write_text(source.replace(_MEMBERS, f"{_MEMBERS}\n    sessions: {json.dumps(overrides)}"))
    return load_policy(str(path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OVERRIDES)
def test_every_group_override_merges_as_typed_values(overrides):
    with tempfile.TemporaryDirectory() as folder:
        policy = _policy_with(overrides, Path(folder))
    effective = policy.sessions_for("reception")
    assert isinstance(effective, SessionPolicy)
    for key in ("idle_timeout", "max_lifetime"):
        assert isinstance(getattr(effective, key), float), key
    assert effective.idle_timeout > 0 or "idle_timeout" in overrides
    if "max_devices" in overrides:
        assert effective.max_devices == overrides["max_devices"]
    # Groups without overrides keep the policy-wide rules.
    assert policy.sessions_for("management").idle_timeout == policy.sessions.idle_timeout


def test_group_overrides_from_yaml_text_are_durations(tmp_path):
    policy = _policy_with({"idle_timeout": "1m", "max_lifetime": "2h", "remember_device": "7d"}, tmp_path)
    effective = policy.sessions_for("reception")
    assert (effective.idle_timeout, effective.max_lifetime, effective.remember_device) == (60.0, 7200.0, 604800.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"idle_timeout": "1m"},
        {"max_lifetime": "2h", "max_devices": 2},
        {"remember_device": "7d", "bind_to_ip": True},
        {"idle_ignore_paths": ["^/api/refresh$"], "on_new_device": "refuse"},
    ],
)
async def test_users_of_an_overridden_group_get_no_500(tmp_path, overrides):
    async with login_env(tmp_path, policy=_policy_with(overrides, tmp_path)) as env:
        browser = Browser(env)
        try:
            status, headers, _ = await browser.password("alice")
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            await browser.enroll("alice")
            for path in ("/reservations", "/reservations/1002", "/api/refresh"):
                status, _, page = await browser.request("GET", path)
                assert status == 200, (path, status, page[:200])
            env.clock.advance(61)
            status, _, _ = await browser.request("GET", "/reservations")
            idle = env.policy.current.sessions_for("reception").idle_timeout
            assert (status == 200) == (idle > 61), (overrides, status)
        finally:
            await browser.close()
