"""Configuration and policy files: validation names file, line and key; docs stay current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.policy import ConfigError, load_policy, policy_json_schema
from gateway.policy.reference import config_example, config_reference, policy_reference
from gateway.policy.reload import PolicyHolder

ROOT = Path(__file__).resolve().parent.parent

BROKEN = """\
property: Test Hotel
sessions:
  idle_timeout: 25x
  max_devices: 0
groups:
  reception:
    access:
      - {allow: "(unclosed"}
login:
  formt: json
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_policy_check_names_file_line_and_key(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = cli("policy", "check", str(broken))
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert f"{broken}:3: sessions.idle_timeout: '25x' is not a duration: write e.g. 90s, 25m, 12h or 30d" in errors
    assert any(line.startswith(f"{broken}:4: sessions.max_devices:") for line in errors)
    assert any(line.startswith(f"{broken}:8: groups.reception.access.0.allow: invalid regular expression") for line in errors)
    assert any(line.startswith(f"{broken}:10: login.formt: unknown key") for line in errors)


def test_policy_check_accepts_the_shipped_policies():
    result = cli("policy", "check", "policies/")
    assert result.returncode == 0, result.stderr


def test_yaml_syntax_error_has_a_line(tmp_path):
    broken = tmp_path / "syntax.yaml"
    broken.write_text("property: x\nsessions:\n  idle_timeout: [25m\n")
    with pytest.raises(ConfigError) as info:
        load_policy(broken)
    assert info.value.problems[0].path == broken and info.value.problems[0].line is not None


def test_undefined_network_name_is_reported(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("groups:\n  reception:\n    networks: [hotel_lan]\n")
    with pytest.raises(ConfigError, match="hotel_lan.*neither a name under `networks:` nor a CIDR"):
        load_policy(file)


def test_yaml_on_and_no_stay_strings(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("alerts:\n  on: [lockout]\nproperty: NO\n")
    policy = load_policy(file)
    assert policy.alerts.on == ["lockout"] and policy.property == "NO"


def test_later_policy_files_override_earlier_ones(tmp_path):
    (tmp_path / "10-base.yaml").write_text("sessions:\n  idle_timeout: 25m\n  max_devices: 2\n")
    (tmp_path / "20-site.yaml").write_text("sessions:\n  idle_timeout: 20m\n")
    policy = load_policy(tmp_path)
    assert policy.sessions.idle_timeout == 20 * 60 and policy.sessions.max_devices == 2


def test_environment_overrides_config_file(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("upstream:\n  url: http://10.0.0.5:8081\nlisten:\n  port: 8443\n")
    config = load_config(file, environ={"PMS_GATEWAY_UPSTREAM__URL": "http://10.0.0.6:9000"})
    assert config.upstream.url == "http://10.0.0.6:9000" and config.listen.port == 8443
    with pytest.raises(ConfigError, match="listen.port"):
        load_config(file, environ={"PMS_GATEWAY_LISTEN__PORT": "99999"})
    with pytest.raises(ConfigError, match=r"config.yaml:2: upstream.url: 'ftp://x' is not an http\(s\) URL"):
        file.write_text("upstream:\n  url: ftp://x\n")
        load_config(file, environ={})


def test_policy_schema_command_prints_json_schema():
    result = cli("policy", "schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "PMS gateway policy"
    assert "sessions" in schema["properties"] and "login" in schema["properties"]
    assert schema == json.loads(json.dumps(policy_json_schema()))


def test_config_example_is_current():
    assert (ROOT / "config.example.yaml").read_text() == config_example(), (
        "regenerate with: pms-gateway config example > config.example.yaml"
    )
    load_config(ROOT / "config.example.yaml", environ={})


@pytest.mark.parametrize("name, generate", [("policy-reference", policy_reference), ("config-reference", config_reference)])
def test_readme_option_reference_is_current(name, generate):
    readme = (ROOT / "README.md").read_text()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    section = readme[readme.index(start) + len(start) : readme.index(end)]
    assert section == generate(), "regenerate with: pms-gateway policy reference --readme README.md"


def test_reload_keeps_last_good_policy(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("sessions:\n  idle_timeout: 10m\n")
    holder = PolicyHolder([file])
    assert holder().sessions.idle_timeout == 600
    file.write_text("sessions:\n  idle_timeout: ten minutes\n")
    assert holder.reload() is False
    assert holder().sessions.idle_timeout == 600
    file.write_text("sessions:\n  idle_timeout: 20m\n")
    assert holder.reload() is True and holder().sessions.idle_timeout == 1200
