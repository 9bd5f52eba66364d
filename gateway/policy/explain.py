"""`pms-gateway policy explain`: what the gateway would do with this user, this address,
this method and path, and every rule that took part, in the order the gateway applies them.

The answer comes from the decision code the running gateway uses, never from a copy: the
path canonicalizer, `UserDirectory.membership` (group), `Policy.network_allows`, the
captcha gate's `captcha_verdict` on `NetworkOwners.owner` (GeoLite2-ASN and the network
list, the Tor exit list) and `KnownNetworks`, the session guard's `CompiledAccessRules`,
`Policy.sessions_for`, the public path and area, API client and password form matchers,
and the rate limiter's `matching_rules`. What lives only in the running gateway's stores
is said to be unknown rather than guessed: failed attempts (`after_failures`, lockouts),
RDAP answers cached by earlier logins, rate-limit counters.

The requester is assumed signed in with a live session (a staff request) unless the
request is the login itself, a password-reset request or a public one; `--user api:NAME`
explains a request carrying API client NAME's token.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from gateway.policy.durations import format_duration
from gateway.policy.errors import ConfigError
from gateway.policy.schema import Policy, SessionPolicy

_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")  # an HTTP token (RFC 9110)
RESERVED_PREFIX = "/_gateway/"


class OperatorError(ValueError):
    """A bad argument: one sentence, exit status 2."""


@dataclass(frozen=True, slots=True)
class Step:
    """One rule that took part: what it is, what it said, why."""

    rule: str  # path, group, network, lockout, captcha, access, sessions, path kinds, rate limit, api client
    outcome: str  # short verdict: allow, deny, captcha, none, not evaluated, ...
    detail: str
    policy: str | None = None  # the policy key it came from, where there is one


@dataclass
class Explanation:
    user: str
    ip: str
    method: str
    path: str
    at: str
    kind: str = "staff request"
    decision: str = "forwarded to the PMS"
    status: int | None = None  # the gateway's own answer; None = forwarded to the PMS
    steps: list[Step] = field(default_factory=list)

    def add(self, rule: str, outcome: str, detail: str, policy: str | None = None) -> None:
        self.steps.append(Step(rule, outcome, detail, policy))

    def decide(self, decision: str, status: int | None) -> None:
        """The first refusal wins, as in the gateway (later steps are still listed)."""
        if self.status is None and self.decision == "forwarded to the PMS":
            self.decision, self.status = decision, status

    def as_json(self) -> dict:
        return asdict(self)

    def as_text(self) -> str:
        lines = [
            f"decision: {self.decision}" + (f" ({self.status})" if self.status else ""),
            f"request:  {self.method} {self.path} as {self.user} from {self.ip} at {self.at}",
            f"kind:     {self.kind}",
            "",
        ]
        width = max(len(s.rule) for s in self.steps)
        for number, step in enumerate(self.steps, 1):
            where = f"  [{step.policy}]" if step.policy else ""
            lines.append(f"{number:2}. {step.rule:<{width}}  {step.outcome}: {step.detail}{where}")
        return "\n".join(lines) + "\n"


def parse_request(ip: str, method: str, path: str, at: str | None) -> tuple[str, str, datetime]:
    """The checked --ip (one spelling, as the gateway keys on it), --method and --at."""
    from gateway.proxy.client_ip import canonical_address

    try:
        ipaddress.ip_address(ip.split("%", 1)[0].strip())
    except ValueError:
        raise OperatorError(f"--ip {ip!r} is not an IP address (write e.g. 192.168.10.7 or 2001:db8::1).") from None
    if not _METHOD.match(method):
        raise OperatorError(f"--method {method!r} is not an HTTP method (write e.g. GET or POST).")
    if not path.startswith("/") or "?" in path or "#" in path:
        raise OperatorError(f"--path {path!r} is not a path: write it as the browser asks for it, from / and without a query.")
    if at is None:
        when = datetime.now(UTC)
    else:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise OperatorError(f"--at {at!r} is not a time (write e.g. 2025-03-01T09:30 or 2025-03-01T09:30+01:00).") from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return canonical_address(ip), method.upper(), when


def explain(policy: Policy, owners, user: str, ip: str, method: str, raw_path: str, at: datetime) -> Explanation:
    """The explanation of one request under `policy`; `owners` is a
    `gateway.risk.ownership.NetworkOwners` (GeoIP and Tor list of the deployment)."""
    from gateway.proxy.canonical import AmbiguousPath, canonicalize

    result = Explanation(user, ip, method, raw_path, at.strftime("%Y-%m-%d %H:%M UTC"))
    up = policy.upstream
    try:
        canonical = canonicalize(raw_path, case_insensitive=up.case_insensitive_paths,
                                 allow_non_ascii=up.allow_non_ascii_paths, normalise_numbers=up.normalise_numbers)
    except AmbiguousPath as exc:
        result.kind = "refused path"
        result.add("path", "refused", f"{raw_path!r}: {exc}", "upstream")
        result.decide("refused before any rule: the path is ambiguous", 400)
        return result
    path = result.path = canonical.path
    result.add("path", "canonical", f"{path} (matched and forwarded in this form)"
               + ("" if path == raw_path else f"; asked as {raw_path}"), "upstream")
    if path.startswith(RESERVED_PREFIX):
        result.kind = "gateway page"
        result.decide("answered by the gateway itself, never forwarded", None)
        _rate_limits(result, policy, method, path, address_only=True)
        return result
    if user.startswith("api:"):
        _api_client(result, policy, user[4:], method, path)
        return result

    login = policy.login
    if login.is_login_request(path, method):
        result.kind = "staff login"
    elif login.is_reset_request(path, method):
        result.kind = "password reset request (public: asks for a reset link)"
    elif (area := policy.areas.public_area_of(path)) is not None:
        result.kind = f"public area {area!r} (no session, never a staff session's cookies)"
    elif policy.is_public_path(path):
        result.kind = "public path (reachable without a session)"
    elif (form := login.password_form_for(path, method)) is not None:
        result.kind = f"password form ({form.kind})"
    _path_kinds(result, policy, method, path)

    group = _group(result, policy, user)
    staff = result.kind == "staff request" or result.kind.startswith("password form (") and "reset" not in result.kind
    login_form = result.kind == "staff login"
    # The captcha gate runs before the login interceptor (group networks, lockouts).
    _captcha(result, policy, owners, ip, applies=login_form or result.kind.startswith("password reset request"))
    if login_form:
        if group is None:
            result.decide("refused: the username is unknown to the policy", 403)
        _network(result, policy, group, ip, "may not sign in from here")
        _lockout(result, policy, ip)
    elif staff:
        if group is None and policy.login.usernames.unknown == "refuse":
            # The login refuses this name, so no session of it exists: the guard's answer.
            result.decide("no session possible (the login refuses this username): sent to the login page"
                          if method in ("GET", "HEAD") else "no session possible (the login refuses this username)",
                          303 if method in ("GET", "HEAD") else 401)
        _network(result, policy, group, ip, "a session is refused here")
        _access(result, policy, group, method, path)
    else:
        result.add("access", "not applied", "no session needed on this path: access rules are for staff requests")
    _sessions(result, policy, group, path, at, staff)
    if login_form and result.status is None:
        result.decide("forwarded to the PMS as the login; on success the second factor is asked", None)
    keys = {"address", "user", "session"} if staff else {"address", "user"} if login_form else {"address"}
    _rate_limits(result, policy, method, path, keys=frozenset(keys))
    return result


def _path_kinds(result: Explanation, policy: Policy, method: str, path: str) -> None:
    login = policy.login
    form = login.password_form_for(path, method)
    clients = [name for name, client in policy.areas.clients.items() if client.paths.search(path)]
    facts = [
        f"login form: {'yes' if login.is_login_request(path, method) else 'no'}",
        f"public path: {'yes' if policy.is_public_path(path) else 'no'}",
        f"public area: {policy.areas.public_area_of(path) or 'no'}",
        f"api client path: {', '.join(clients) if clients else 'no'}",
        f"password form: {form.kind if form else 'no'}",
        f"logout: {'yes' if path in login.logout_paths else 'no'}",
    ]
    result.add("path kinds", result.kind, "; ".join(facts), "login, public_areas, api_clients")
    if clients:
        result.add("api client", "not this request", f"with the token of {' or '.join(clients)} it would be judged as "
                   f"that client (--user api:{clients[0]}); without one a live session is needed (401 JSON otherwise)",
                   f"api_clients.{clients[0]}")


def _directory(policy: Policy):
    from gateway.auth.users import UserDirectory

    # Only the name and group rules are used: no database, key ring or store.
    return UserDirectory(None, None, lambda: policy, None)  # type: ignore[arg-type]


def _group(result: Explanation, policy: Policy, user: str) -> str | None:
    directory = _directory(policy)
    try:
        name = directory.normalise(user)
    except ValueError as exc:
        raise OperatorError(f"--user {user!r}: {exc}.") from None
    group, why = directory.membership(name)
    spelt = "" if name == user else f" (written {user!r})"
    if group is None:
        result.add("group", "none", f"{name}{spelt} is in no group and login.usernames.unknown is "
                   f"{policy.login.usernames.unknown}" + ("" if policy.default_group else ", no default_group"),
                   "login.usernames.unknown")
    elif why == "default_group":
        result.add("group", group, f"{name}{spelt} is in no group's members: default_group", "default_group")
    else:
        how = f"matches {why!r}" if why.startswith("re:") else "is listed"
        result.add("group", group, f"{name}{spelt} {how} in groups.{group}.members", f"groups.{group}.members")
    return group


def _network(result: Explanation, policy: Policy, group: str | None, ip: str, refused: str) -> None:
    networks = policy.groups[group].networks if group in policy.groups else []
    where = f"groups.{group}.networks" if group else None
    if policy.network_allows(group, ip):
        detail = f"{ip} is in {', '.join(networks)}" if networks else "the group lists no networks: anywhere"
        result.add("network", "allow", detail, where)
        return
    result.add("network", "deny", f"{ip} is outside {', '.join(networks)}: {refused}", where)
    result.decide(f"refused: network not allowed for group {group}", 403)


def _lockout(result: Explanation, policy: Policy, ip: str) -> None:
    from gateway.risk.networks import KnownNetworks

    rules = policy.lockout
    inside = KnownNetworks().contains(ip, policy)
    mode = rules.inside_known_networks if inside else "lock"
    u, a = rules.per_user, rules.per_ip
    then = ("a growing wait (inside the known networks: lockout.inside_known_networks delay)" if mode == "delay"
            else f"a lock (429) for {format_duration(u.lock_for)} per user, {format_duration(a.lock_for)} per address")
    result.add("lockout", "not evaluated offline",
               f"failed attempts are counted in the running gateway's store; {u.failures} per user within "
               f"{format_duration(u.within)} or {a.failures} per address within {format_duration(a.within)} bring {then}",
               "lockout")


def _captcha(result: Explanation, policy: Policy, owners, ip: str, applies: bool) -> None:
    from gateway.risk.captcha import captcha_verdict, needs_owner
    from gateway.risk.networks import KnownNetworks

    rules = policy.captcha
    inside = KnownNetworks().contains(ip, policy)
    owner = owners.owner(ip, policy, None)
    kinds = ", ".join(sorted(owner.kinds)) or "no risk kind"
    if owner.local:
        who = "a private or local address (nothing to look up)"
    else:
        who = (owner.name or "owner unknown") + f" ({kinds}" + (f"; from {', '.join(owner.sources)}" if owner.sources else "") + ")"
    offline = "; RDAP answers cached by earlier logins are not read here" if policy.risk.rdap and not owner.local else ""
    result.add("network owner", "inside known networks" if inside else "outside known networks",
               who + offline, "captcha.known_networks, risk.networks")
    if not rules.when and rules.on_unknown == "allow":
        result.add("captcha", "off", "captcha.when is empty", "captcha.when")
        return
    verdict = captcha_verdict(rules, inside, owner if needs_owner(rules) else None, None)
    for trigger in verdict.triggers:
        outcome = "not evaluated offline" if trigger.fired is None else "fires" if trigger.fired else "no"
        detail = trigger.detail
        if trigger.name == "after_failures":
            detail = f"failed attempts are counted in the running gateway's store; {detail}"
        key = "captcha.on_unknown" if trigger.name == "on_unknown" else "captcha.when"
        result.add(f"captcha {trigger.name}", outcome, detail, key)
    if verdict.reason is None:
        summary = "no captcha from this address" + (" unless after_failures fires" if "after_failures" in rules.when else "")
    else:
        summary = f"captcha first: {verdict.reason}"
    if not applies:
        result.add("captcha", "not this request", f"asked on the login and reset requests only; a login from here: {summary}")
        return
    result.add("captcha", "captcha" if verdict.reason else "none", summary.replace("captcha first: ", "asked first: "), "captcha")
    if verdict.reason is not None:
        result.decide(f"captcha before the password goes to the PMS ({verdict.reason})", 303)


def _access(result: Explanation, policy: Policy, group: str | None, method: str, path: str) -> None:
    from gateway.sessions.guard import CompiledAccessRules

    match = CompiledAccessRules(policy).matching_rule(group, method, path)
    if match is None:
        result.add("access", "allow", "no access rule matches: allowed", f"groups.{group}.access" if group else None)
        return
    index, allow = match
    rule = policy.groups[group or ""].access.rules[index]
    written = f"{'allow' if allow else 'deny'}: {rule.allow or rule.deny!r}" + (f", methods {rule.methods}" if rule.methods else "")
    where = f"groups.{group}.access.rules.{index}"
    result.add("access", "allow" if allow else "deny", f"first matching rule {{{written}}}", where)
    if not allow:
        result.decide(f"refused by the access rule {where}", 403)


def _sessions(result: Explanation, policy: Policy, group: str | None, path: str, at: datetime, staff: bool) -> None:
    rules: SessionPolicy = policy.sessions_for(group)
    overrides = sorted(policy.groups[group].sessions.model_fields_set) if group in policy.groups else []
    source = f"groups.{group}.sessions overrides {', '.join(overrides)}" if overrides else "the policy-wide sessions"
    result.add(
        "sessions", "in force",
        f"{source}: idle_timeout {format_duration(rules.idle_timeout)}, max_lifetime "
        f"{format_duration(rules.max_lifetime)}, max_devices {rules.max_devices} ({rules.on_new_device}), "
        f"bind_to_ip {str(rules.bind_to_ip).lower()}, remember_device "
        f"{format_duration(rules.remember_device) if rules.remember_device else 'off'}; a session signed in at "
        f"{at:%H:%M} UTC ends at {at + timedelta(seconds=rules.max_lifetime):%Y-%m-%d %H:%M} UTC at the latest",
        f"groups.{group}.sessions" if overrides else "sessions",
    )
    polling = rules.ignores_activity(path)
    where = f"groups.{group}.sessions.idle_ignore_paths" if "idle_ignore_paths" in overrides else "sessions.idle_ignore_paths"
    if not staff:
        result.add("polling", "not applied", "no session is touched by this request", where)
        return
    result.add("polling", "yes" if polling else "no",
               "does not keep the session alive (idle_ignore_paths)" if polling else "counts as activity", where)
    if rules.is_cacheable(path):
        result.add("cache", "cacheable", "the browser may cache the answer (cacheable_paths)", "sessions.cacheable_paths")


def _rate_limits(result: Explanation, policy: Policy, method: str, path: str, *,
                 keys: frozenset = frozenset({"address"}), address_only: bool = False) -> None:
    from gateway.risk.rate_limits import describe_rule, matching_rules

    kinds = frozenset({"address"}) if address_only else keys
    rules = matching_rules(policy, method, path, kinds)  # type: ignore[arg-type]
    if not rules:
        result.add("rate limit", "none", f"no rule of rate_limits counts {method} {path} here", "rate_limits")
        return
    for rule in rules:
        index = policy.rate_limits.index(rule)
        result.add("rate limit", "counts", describe_rule(rule) + " (429 past it; counters not read here)",
                   f"rate_limits.{index}")


def _api_client(result: Explanation, policy: Policy, name: str, method: str, path: str) -> None:
    from gateway.risk.rate_limits import describe_rule

    client = policy.areas.clients.get(name)
    if client is None:
        known = ", ".join(policy.areas.clients) or "none"
        raise OperatorError(f"--user api:{name}: the policy declares no API client {name!r} (declared: {known}).")
    result.kind = f"API client {name} (its token; no session, captcha or CSRF check)"
    where = f"api_clients.{name}"
    if client.allows_address(result.ip):
        result.add("network", "allow", f"{result.ip} is in {', '.join(client.rule.networks)}", f"{where}.networks")
    else:
        result.add("network", "deny", f"{result.ip} is outside {', '.join(client.rule.networks)}", f"{where}.networks")
        result.decide("refused: API client from a network it is not allowed", 403)
    if client.allows_request(method, path):
        result.add("access", "allow", f"{method} {path} is within its paths and methods", f"{where}.paths")
    else:
        result.add("access", "deny", f"{method} {path} is outside its paths {client.rule.paths} or methods "
                   f"{client.rule.methods or 'any'}", f"{where}.paths")
        result.decide("refused: API client outside its paths or methods", 403)
    from gateway.policy.rate_limits import RateLimitRule

    rule = RateLimitRule(path=client.paths.pattern, key="api_client", rate=client.rule.rate_limit)
    result.add("rate limit", "counts", describe_rule(rule) + " (the client's rate_limit)", f"{where}.rate_limit")
    _rate_limits(result, policy, method, path, keys=frozenset({"address", "api_client"}))


def explain_command(
    user: str, ip: str, method: str, path: str, at: str | None, as_json: bool,
    config_path: Path | None, policy_paths: list[Path] | None,
) -> int:
    """Exit status: 0 explained, 2 an operator error (one sentence on stderr)."""
    try:
        address, verb, when = parse_request(ip, method, path, at)
        policy, owners = _load(config_path, policy_paths)
        try:
            explanation = explain(policy, owners, user, address, verb, path, when)
        finally:
            owners.geo.close()
    except (OperatorError, ConfigError) as exc:
        typer.echo(f"error: {exc}" if isinstance(exc, OperatorError) else str(exc), err=True)
        return 2
    if as_json:
        typer.echo(json.dumps(explanation.as_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(explanation.as_text(), nl=False)
    return 0


def _load(config_path: Path | None, policy_paths: list[Path] | None):
    """The policy (--policy, else config's policy_paths) and the deployment's network
    owner sources (GeoIP files and the Tor exit list in the data directory)."""
    from gateway.config import load_config
    from gateway.policy.loader import load_policy
    from gateway.risk.geoip import GeoLocator
    from gateway.risk.ownership import NetworkOwners, TorExits, tor_list_path

    config = load_config(config_path)
    policy = load_policy(*(policy_paths or config.policy_paths))
    return policy, NetworkOwners(GeoLocator(config.geoip), TorExits(tor_list_path(config.data_dir)))
