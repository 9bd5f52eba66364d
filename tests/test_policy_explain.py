"""`pms-gateway policy explain` (issue 12 item 5): a table of requests, each answered with
the decision and the rules that took part, through the real command (`--json`, parsed).

The network owners come from MaxMind's free-format GeoLite2-ASN test database
(tests/data/geoip) classified by the shipped network list, and a Tor exit list installed
the operator's way; nothing is mocked. Besides the shipped default and strict policies, a
test policy adds the rule kinds the default does not use (group networks, a method-bound
access rule, per-group session overrides, a path rate limit, unknown-network captchas).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.risk.ownership import install_tor_list

ROOT = Path(__file__).resolve().parent.parent
ASN_DB = ROOT / "tests" / "data" / "geoip" / "GeoLite2-ASN-Test.mmdb"
DEFAULT = ROOT / "policies" / "default.yaml"
STRICT = ROOT / "policies" / "strict.yaml"
TOR_EXIT = "185.220.101.7"
HOTEL = "192.168.10.7"
HOME_ISP = "89.160.20.112"  # AS29518 Bredband2 AB: known owner, no risk kind
GOOGLE = "1.0.0.1"  # AS15169 Google Inc.: hosting by the shipped list's name pattern
BY_NUMBER = "67.43.149.1"  # AS35908 without an organisation name: hosting by number
NOBODY = "8.8.4.4"  # in no test database, no list

TEST_POLICY = """\
login:
  usernames: {unknown: refuse}
networks:
  hotel_lan: [192.168.10.0/24, 127.0.0.0/8]
captcha:
  when: [unknown_network, after_failures]
  known_networks: [hotel_lan]
  on_unknown: captcha
sessions:
  idle_timeout: 25m
  idle_ignore_paths: [^/api/refresh$]
rate_limits:
  - {login: true, key: address, rate: 60/minute}
  - {path: ^/reports/, methods: [GET], key: user, rate: 30/hour, strategy: fixed-window}
groups:
  reception:
    members: [alice, "re:^frontdesk-"]
    access:
      - {deny: ^/reports(/|$)}
      - {deny: ^/rates/, methods: [POST, DELETE]}
  night:
    members: ["re:^night-"]
    networks: [hotel_lan]
    sessions: {idle_timeout: 5m, idle_ignore_paths: [^/night/poll$]}
  management:
    members: [manager]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("explain")
    (base / "test.yaml").write_text(TEST_POLICY)
    exits = base / "exits.txt"
    exits.write_text(f"{TOR_EXIT}\n")
    install_tor_list(exits, base / "var")
    return {"PMS_GATEWAY_GEOIP__ASN": str(ASN_DB), "PMS_GATEWAY_DATA_DIR": str(base / "var"), "_base": str(base)}


def explain(env: dict[str, str], policy: Path | str, user: str, ip: str, method: str, path: str, *extra: str):
    if policy == "test":
        policy = Path(env["_base"]) / "test.yaml"
    args = ["policy", "explain", "--policy", str(policy), "--user", user, "--ip", ip, "--method", method,
            "--path", path, *extra]
    result = CliRunner().invoke(app, args, env={k: v for k, v in env.items() if not k.startswith("_")})
    return result


def explained(env, *args) -> dict:
    result = explain(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def steps(answer: dict, rule: str) -> list[dict]:
    return [s for s in answer["steps"] if s["rule"] == rule]


# (policy, user, ip, method, path) -> status (None = forwarded), kind prefix, {rule: (outcome, detail part, policy key)}
CASES = [
    pytest.param(DEFAULT, "alice", HOTEL, "GET", "/reports", 403, "staff request",
                 {"group": ("reception", "is listed", "groups.reception.members"),
                  "access": ("deny", "^/reports(/|$)", "groups.reception.access.rules.0")}, id="access-deny"),
    pytest.param(DEFAULT, "manager", HOTEL, "GET", "/reports", None, "staff request",
                 {"group": ("management", "listed", None), "access": ("allow", "no access rule matches", None)},
                 id="access-allow-other-group"),
    pytest.param(DEFAULT, "Frontdesk-3", HOTEL, "GET", "/reservations", None, "staff request",
                 {"group": ("reception", "matches 're:^frontdesk-'", "groups.reception.members")}, id="group-by-pattern"),
    pytest.param(DEFAULT, "stranger", HOTEL, "GET", "/reservations", None, "staff request",
                 {"group": ("reception", "default_group", "default_group")}, id="group-default"),
    pytest.param("test", "stranger", HOTEL, "POST", "/login", 403, "staff login",
                 {"group": ("none", "unknown is refuse", "login.usernames.unknown")}, id="unknown-user-refused"),
    pytest.param(DEFAULT, "alice", GOOGLE, "POST", "/login", 303, "staff login",
                 {"network owner": ("outside known networks", "AS15169 Google Inc. (hosting; from network list)", None),
                  "captcha hosting_provider": ("fires", "hosting provider", "captcha.when"),
                  "captcha": ("captcha", "hosting provider", None)}, id="captcha-hosting-asn-name"),
    pytest.param(DEFAULT, "alice", BY_NUMBER, "POST", "/login", 303, "staff login",
                 {"captcha hosting_provider": ("fires", "hosting provider", None)}, id="captcha-hosting-asn-number"),
    pytest.param(DEFAULT, "alice", TOR_EXIT, "POST", "/login", 303, "staff login",
                 {"network owner": ("outside known networks", "tor list", None), "captcha tor": ("fires", "tor", None)},
                 id="captcha-tor-list"),
    pytest.param(DEFAULT, "alice", HOME_ISP, "POST", "/login", None, "staff login",
                 {"network owner": ("outside known networks", "AS29518 Bredband2 AB (no risk kind", None),
                  "captcha after_failures": ("not evaluated offline", "counted in the running gateway's store", None),
                  "captcha": ("none", "unless after_failures fires", None),
                  "lockout": ("not evaluated offline", "5 per user within 15m", "lockout")}, id="login-forwarded"),
    pytest.param("test", "alice", HOME_ISP, "POST", "/login", 303, "staff login",
                 {"captcha unknown_network": ("fires", "unknown network", "captcha.when")}, id="captcha-unknown-network"),
    pytest.param("test", "alice", HOTEL, "POST", "/login", None, "staff login",
                 {"captcha unknown_network": ("no", "inside the known networks", None),
                  "captcha on_unknown": ("no", "inside the known networks", "captcha.on_unknown")},
                 id="no-captcha-inside"),
    pytest.param("test", "alice", NOBODY, "POST", "/login", 303, "staff login",
                 {"captcha on_unknown": ("fires", "nothing known about the address", "captcha.on_unknown")},
                 id="captcha-on-unknown"),
    pytest.param("test", "night-1", "10.9.9.9", "GET", "/reservations", 403, "staff request",
                 {"group": ("night", "re:^night-", None), "network": ("deny", "outside hotel_lan", "groups.night.networks")},
                 id="network-refused"),
    pytest.param("test", "night-1", HOTEL, "GET", "/reservations", None, "staff request",
                 {"network": ("allow", "is in hotel_lan", None),
                  "sessions": ("in force", "groups.night.sessions overrides idle_ignore_paths, idle_timeout: idle_timeout 5m",
                               "groups.night.sessions")}, id="group-session-override"),
    pytest.param("test", "reception-less", HOTEL, "GET", "/", 303, "staff request",
                 {"group": ("none", "in no group", None)}, id="unknown-user-no-group-no-network"),
    pytest.param("test", "alice", HOTEL, "POST", "/rates/7", 403, "staff request",
                 {"access": ("deny", "methods ['POST', 'DELETE']", "groups.reception.access.rules.1")},
                 id="access-deny-by-method"),
    pytest.param("test", "alice", HOTEL, "GET", "/rates/7", None, "staff request",
                 {"access": ("allow", "no access rule matches", None)}, id="access-method-not-matched"),
    pytest.param(DEFAULT, "alice", NOBODY, "GET", "/static/app.css", None, "public path",
                 {"path kinds": ("public path", "public path: yes", None), "access": ("not applied", "", None),
                  "polling": ("not applied", "", None)}, id="public-path"),
    pytest.param(DEFAULT, "bob", NOBODY, "GET", "/guest/booking/3/secret", None, "public area 'guest booking'",
                 {"path kinds": ("public area", "public area: guest booking", None)}, id="public-area"),
    pytest.param(DEFAULT, "alice", HOTEL, "GET", "/api/v1/rooms", None, "staff request",
                 {"path kinds": ("staff request", "api client path: channel-manager", None),
                  "api client": ("not this request", "--user api:channel-manager", "api_clients.channel-manager")},
                 id="api-client-path-as-staff"),
    pytest.param(DEFAULT, "api:channel-manager", HOTEL, "GET", "/api/v1/rooms", None, "API client channel-manager",
                 {"network": ("allow", "hotel_lan", "api_clients.channel-manager.networks"),
                  "rate limit": ("counts", "120/minute per api_client", "api_clients.channel-manager.rate_limit")},
                 id="api-client-allowed"),
    pytest.param(DEFAULT, "api:channel-manager", NOBODY, "GET", "/api/v1/rooms", 403, "API client",
                 {"network": ("deny", "outside hotel_lan", None)}, id="api-client-wrong-network"),
    pytest.param(DEFAULT, "api:channel-manager", HOTEL, "DELETE", "/api/v1/rooms/1", 403, "API client",
                 {"access": ("deny", "outside its paths", None)}, id="api-client-wrong-method"),
    pytest.param(DEFAULT, "alice", HOTEL, "POST", "/reservations/12/erase", None, "password form (reauth)",
                 {"path kinds": ("password form (reauth)", "password form: reauth", None),
                  "access": ("allow", "", None)}, id="password-form-reauth"),
    pytest.param(DEFAULT, "alice", HOTEL, "POST", "/password/reset/tok3n", None, "public path",
                 {"path kinds": ("public path", "password form: reset", None)}, id="password-form-reset"),
    pytest.param(DEFAULT, "alice", GOOGLE, "POST", "/password/forgot", 303, "password reset request",
                 {"captcha": ("captcha", "hosting provider", None),
                  "rate limit": ("counts", "10/hour per address (moving-window) on password reset request", "rate_limits.3")},
                 id="reset-request-captcha-and-rate-limit"),
    pytest.param(DEFAULT, "alice", HOTEL, "GET", "/api/refresh", None, "staff request",
                 {"polling": ("yes", "does not keep the session alive", "sessions.idle_ignore_paths")}, id="polling"),
    pytest.param("test", "night-1", HOTEL, "GET", "/night/poll", None, "staff request",
                 {"polling": ("yes", "idle_ignore_paths", "groups.night.sessions.idle_ignore_paths")},
                 id="polling-per-group"),
    pytest.param("test", "alice", HOTEL, "GET", "/night/poll", None, "staff request",
                 {"polling": ("no", "counts as activity", "sessions.idle_ignore_paths")}, id="polling-not-other-group"),
    pytest.param("test", "manager", HOTEL, "GET", "/reports/daily", None, "staff request",
                 {"rate limit": ("counts", "30/hour per user (fixed-window) on ^/reports/", "rate_limits.1")},
                 id="rate-limit-path"),
    pytest.param("test", "manager", HOTEL, "POST", "/reports/daily", None, "staff request",
                 {"rate limit": ("none", "no rule of rate_limits counts POST /reports/daily", "rate_limits")},
                 id="rate-limit-method-not-counted"),
    pytest.param(DEFAULT, "alice", HOTEL, "POST", "/_gateway/2fa", None, "gateway page",
                 {"rate limit": ("counts", "60/minute per address", "rate_limits.2")}, id="gateway-page"),
    pytest.param(STRICT, "alice", HOTEL, "GET", "/reservations", None, "staff request",
                 {"sessions": ("in force", "idle_timeout 20m", "sessions")}, id="strict-policy"),
    pytest.param(DEFAULT, "alice", HOTEL, "GET", "/a%2Fb", 400, "refused path",
                 {"path": ("refused", "encoded", None)}, id="ambiguous-path"),
]


@pytest.mark.parametrize("policy, user, ip, method, path, status, kind, expected", CASES)
def test_explain_table(env, policy, user, ip, method, path, status, kind, expected):
    answer = explained(env, policy, user, ip, method, path)
    assert answer["status"] == status, answer
    assert answer["kind"].startswith(kind), answer["kind"]
    for rule, (outcome, detail, key) in expected.items():
        found = steps(answer, rule)
        assert found, f"no {rule!r} step in {[s['rule'] for s in answer['steps']]}"
        assert any(
            s["outcome"].startswith(outcome) and detail in s["detail"] and (key is None or s["policy"] == key)
            for s in found
        ), (rule, found)


def test_rules_are_listed_in_the_gateways_order(env):
    """The captcha gate runs before the login interceptor's group network and lockout;
    for a staff request the network comes before the access rule, rate limits last."""
    login = [s["rule"] for s in explained(env, "test", "night-1", GOOGLE, "POST", "/login")["steps"]]
    assert login.index("group") < login.index("captcha") < login.index("network") < login.index("lockout")
    staff = [s["rule"] for s in explained(env, "test", "night-1", HOTEL, "GET", "/x")["steps"]]
    assert staff.index("network") < staff.index("access") < staff.index("sessions") < staff.index("rate limit")


def test_the_first_refusal_decides(env):
    """From a hosting address outside its networks a night auditor's login meets the captcha
    first (the gate runs before the interceptor), the network refusal is listed after it."""
    answer = explained(env, "test", "night-1", GOOGLE, "POST", "/login")
    assert answer["status"] == 303 and "captcha" in answer["decision"]
    assert steps(answer, "network")[0]["outcome"] == "deny"


def test_text_output_and_time(env):
    result = explain(env, DEFAULT, "alice", HOTEL, "GET", "/reports", "--at", "2025-03-01T09:30+01:00")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "decision: refused by the access rule groups.reception.access.rules.0 (403)"
    assert lines[1] == "request:  GET /reports as alice from 192.168.10.7 at 2025-03-01 08:30 UTC"
    assert any("access" in line and "deny" in line and "[groups.reception.access.rules.0]" in line for line in lines)
    assert any("signed in at 08:30 UTC ends at 2025-03-01 20:30 UTC" in line for line in lines)


def test_mapped_address_is_read_as_the_gateway_reads_it(env):
    answer = explained(env, "test", "night-1", "::ffff:192.168.10.7", "GET", "/reservations")
    assert answer["ip"] == HOTEL and answer["status"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (("alice", "192.168.10", "GET", "/"), "--ip '192.168.10' is not an IP address"),
        (("alice", HOTEL, "GE T", "/"), "--method 'GE T' is not an HTTP method"),
        (("alice", HOTEL, "GET", "reports"), "--path 'reports' is not a path"),
        (("alice", HOTEL, "GET", "/reports?x=1"), "--path '/reports?x=1' is not a path"),
        (("alice", HOTEL, "GET", "/", "--at", "tomorrow"), "--at 'tomorrow' is not a time"),
        (("api:door-locks", HOTEL, "GET", "/"), "declares no API client 'door-locks'"),
        (("ali\u200bce", HOTEL, "GET", "/"), "--user"),
    ],
)
def test_operator_errors_are_one_sentence_exit_2(env, args, message):
    result = explain(env, DEFAULT, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_broken_policy_names_file_and_line(env, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n  reception:\n    access:\n      - {allow: '(unclosed'}\n")
    result = explain(env, broken, "alice", HOTEL, "GET", "/")
    assert result.exit_code == 2
    assert "broken.yaml:4" in result.output and "Traceback" not in result.output
