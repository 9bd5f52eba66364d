"""Settings that are legal but probably wrong: `policy check` warns about them.

A policy that validates can still leave the door open or annoy every receptionist; these
are the combinations an operator most likely did not mean. Each warning names the key at
the line of the file that set it (or the last file that wrote its section).
"""

from __future__ import annotations

from gateway.policy.errors import ConfigProblem, problem_at
from gateway.policy.loader import LoadedPolicy

MIN_SENSIBLE_IDLE = 60  # seconds: below a minute staff are signed out while reading a page


def policy_warnings(loaded: LoadedPolicy) -> list[ConfigProblem]:
    policy, sources = loaded.policy, loaded.sources
    if not sources:
        return []
    found: list[tuple[tuple, str]] = []
    if policy.sessions.idle_timeout < MIN_SENSIBLE_IDLE:
        found.append((("sessions", "idle_timeout"), _short_idle(policy.sessions.idle_timeout)))
    for name, group in policy.groups.items():
        idle = group.sessions.idle_timeout
        if idle is not None and idle < MIN_SENSIBLE_IDLE:
            found.append((("groups", name, "sessions", "idle_timeout"), _short_idle(idle)))
    if not policy.second_factor.required:
        found.append((("second_factor", "required"),
                      "no second factor: a stolen or guessed password alone signs in; set required: true"))
    elif not policy.second_factor.methods:
        found.append((("second_factor", "methods"), "no method listed: nobody can enrol a second factor"))
    notifications = policy.notifications
    if notifications.unmatched_egress == "pass" and notifications.channels:
        found.append((("notifications", "unmatched_egress"),
                      "pass while channels are defined: a call to a host no channel names (a new SMS "
                      "provider, a changed API path) leaves unredacted; block it unless the PMS calls other APIs"))
    return [problem_at(sources, loc, message, "warning") for loc, message in found]


def _short_idle(seconds: float) -> str:
    return f"{seconds:g}s is under a minute: staff will be signed out while reading a page (did you mean minutes?)"
