"""`policy check` warns about path patterns a request slips past (issue 8 leftovers).

An unanchored public-area or API-client pattern (`guest`) opens `/reservations/guest`
without a session; a deny rule closed with `$` misses `/reports/` and `/reports.json`,
which most frameworks route to the same page; a case-sensitive deny rule misses
`/Reports` on a PMS that routes regardless of case. Checked through the real command.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"


def _check(tmp_path: Path, text: str) -> tuple[int, str]:
    site = tmp_path / "site.yaml"
    site.write_text(text)
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout


def test_unanchored_public_and_api_paths_are_warned_with_the_anchored_form(tmp_path):
    status, out = _check(tmp_path, "\n".join([
        "public_areas:",
        "  guest portal:",
        "    paths: [guest, ^/book/]",
        "api_clients:",
        "  locks:",
        "    paths: ['^/api/locks/|/api/keys/']",
        "    networks: [10.0.0.0/24]",
        "",
    ]))
    assert status == 0
    site = tmp_path / "site.yaml"
    assert (f"warning: {site}:3: public_areas.guest portal.paths.0: 'guest' is searched anywhere in the path, "
            f"so '/reservations/guest' is public without a session too; anchor every branch at the start: "
            f"'^/guest'") in out
    assert "public_areas.guest portal.paths.1" not in out  # ^/book/ is anchored
    assert "api_clients.locks.paths.0: '^/api/locks/|/api/keys/' is searched anywhere" in out
    assert "'^/api/locks/|^/api/keys/'" in out


def test_a_deny_rule_closed_with_dollar_is_warned_and_the_open_form_suggested(tmp_path):
    status, out = _check(tmp_path, "\n".join([
        "extends: " + str(DEFAULT_POLICY),
        "groups:",
        "  reception:",
        "    access:",
        "      - {deny: '^/reports$'}",
        "      - {deny: '^/admin(/|$)'}",
        "      - {deny: '^/night-audit/?$'}",
        "",
    ]))
    assert status == 0
    warned = re.findall(r"^warning: .*groups\.reception\.access\.(\d)\.deny: (.*)$", out, re.M)
    assert [index for index, _ in warned] == ["0"], out
    assert "`/reports/`, `/reports.json`" in warned[0][1] and "write '^/reports(/|$)'" in warned[0][1]
    # the suggested form really catches what slipped past
    assert re.search("^/reports$", "/reports/") is None and re.search("^/reports(/|$)", "/reports/")


def test_case_sensitive_deny_rules_warn_unless_the_operator_chose(tmp_path):
    rules = "groups:\n  reception:\n    access:\n      - {deny: '^/reports(/|$)'}\n"
    status, out = _check(tmp_path, rules)
    assert status == 0
    assert ("upstream.case_insensitive_paths: unset while groups.reception.access.0.deny denies "
            "'^/reports(/|$)': a PMS that routes regardless of case") in out
    for chosen in ("upstream:\n  case_insensitive_paths: false\n", "upstream:\n  case_insensitive_paths: true\n"):
        status, out = _check(tmp_path, chosen + rules)
        assert status == 0 and "case_insensitive_paths" not in out, out
    status, out = _check(tmp_path, rules.replace("'^/reports", "'(?i)^/reports"))
    assert "case_insensitive_paths" not in out, out


def test_the_shipped_policy_gets_none_of_these_warnings(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", "policies/"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "searched anywhere" not in result.stdout and "ends at the end of the path" not in result.stdout
    assert "case_insensitive_paths" not in result.stdout
