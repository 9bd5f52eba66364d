"""Settings that are legal but probably wrong: `policy check` warns about them.

A policy that validates can still leave the door open or annoy every receptionist; these
are the combinations an operator most likely did not mean. Each warning names the key at
the line of the file that set it (or the last file that wrote its section).
"""

from __future__ import annotations

import re

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
    found += _unanchored_areas(loaded)
    found += _slippable_denials(loaded)
    return [problem_at(sources, loc, message, "warning") for loc, message in found]


def _short_idle(seconds: float) -> str:
    return f"{seconds:g}s is under a minute: staff will be signed out while reading a page (did you mean minutes?)"


def _unanchored_areas(loaded: LoadedPolicy) -> list[tuple[tuple, str]]:
    """Public areas and API clients open paths without a session: a pattern searched anywhere
    in the path (`guest`) also opens `/reservations/guest`, so each branch must start at `^`."""
    policy = loaded.policy
    found: list[tuple[tuple, str]] = []
    owners = [(("public_areas", name, "paths"), area.paths, "public without a session")
              for name, area in policy.public_areas.items()]
    owners += [(("api_clients", name, "paths"), client.paths, "open to the client's token")
               for name, client in policy.api_clients.items()]
    for loc, patterns, opened in owners:
        for index, pattern in enumerate(patterns):
            loose = [branch for branch in _top_level_branches(pattern) if not _anchored(branch)]
            if loose:
                example = "/reservations/" + (_literal_start(loose[0]).strip("/") or "x")
                found.append(((*loc, index),
                              f"{pattern!r} is searched anywhere in the path, so {example!r} is {opened} "
                              f"too; anchor every branch at the start: {_anchor(pattern)!r}"))
    return found


def _slippable_denials(loaded: LoadedPolicy) -> list[tuple[tuple, str]]:
    """Deny rules that end the match at the end of the path (`^/reports$`) miss `/reports/`
    and `/reports.json`, which Rails, Express, Spring and most PHP routers serve as the same
    page; a case-sensitive rule misses `/Reports`, which ASP.NET/IIS and Express serve too."""
    policy, sources = loaded.policy, loaded.sources
    found: list[tuple[tuple, str]] = []
    cased: tuple[tuple, str] | None = None
    for name, group in policy.groups.items():
        for index, rule in enumerate(group.access.rules):
            if rule.deny is None:
                continue
            loc = ("groups", name, "access", index, "deny")
            if _closed_at_end(rule.deny):
                found.append((loc, f"{rule.deny!r} ends at the end of the path: a trailing slash or a suffix "
                                   f"(`/reports/`, `/reports.json`) reaches the PMS on most frameworks; "
                                   f"write {_open_end(rule.deny)!r}"))
            if cased is None and _has_letters(rule.deny):
                cased = (loc, rule.deny)
    considered = any(("upstream", "case_insensitive_paths") in source.lines for source in sources)
    if cased is not None and not policy.upstream.case_insensitive_paths and not considered:
        loc, deny = cased
        found.append((("upstream", "case_insensitive_paths"),
                      f"unset while {'.'.join(map(str, loc))} denies {deny!r}: a PMS that routes regardless of "
                      f"case (ASP.NET/IIS, Express by default) serves `/Reports` past it; set it to true if yours "
                      f"does (the gateway then lower-cases paths), or to false to say it does not"))
    return found


def _has_letters(pattern: str) -> bool:
    """Whether a case-sensitive pattern names letters (escapes like `\\d` and group syntax aside)."""
    flags = _INLINE_FLAGS.match(pattern)
    if flags is not None and "i" in flags.group():
        return False
    return re.search("[A-Za-z]", re.sub(r"\\.|\(\?(P<\w+>|[:=!]|<[=!])", "", pattern)) is not None


def _top_level_branches(pattern: str) -> list[str]:
    """The alternatives of `pattern` outside any group or class (`^/a|/b` is two)."""
    branches, depth, in_class, start, index = [], 0, False, 0, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1:index + 2] == "]":
                index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(pattern[start:index])
            start = index + 1
        index += 1
    return [*branches, pattern[start:]]


_INLINE_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")


def _anchored(branch: str) -> bool:
    return _INLINE_FLAGS.sub("", branch).startswith(("^", "\\A"))


def _literal_start(branch: str) -> str:
    return re.match(r"[\w/.-]*", _INLINE_FLAGS.sub("", branch)).group()  # type: ignore[union-attr]


def _anchor(pattern: str) -> str:
    def fixed(branch: str) -> str:
        if _anchored(branch):
            return branch
        flags = _INLINE_FLAGS.match(branch)
        head, rest = (flags.group(), branch[flags.end():]) if flags else ("", branch)
        return head + "^" + ("" if rest.startswith("/") else "/") + rest
    return "|".join(fixed(branch) for branch in _top_level_branches(pattern))


_END = re.compile(r"(?<!\\)\$(\)*)$")  # an unescaped `$` closing the pattern, maybe inside groups


def _closed_at_end(pattern: str) -> bool:
    """Whether the last branch must end exactly where the path ends (`/x$`), not at an
    alternative (`(/|$)`) or after an optional tail (`/?$`, `(/.*)?$`, `.*$`)."""
    end = _END.search(pattern)
    if end is None:
        return False
    before = pattern[:end.start()]
    return not before.endswith(("|", "?", "*", "(/|", "(?:/|"))


def _open_end(pattern: str) -> str:
    end = _END.search(pattern)
    assert end is not None
    return pattern[:end.start()] + "(/|$)" + end.group(1)
