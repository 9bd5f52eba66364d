"""Every operator error is one sentence naming the key, path or address and the fix (issue 10).

Table-driven: each case runs the real command line (`pms-gateway run`, `demo`, `config
check`, `policy check`, `policy migrate`) in a subprocess with one bad setting and asserts
the exit status, that the message names the thing (its key, path or address), that it is
at most two lines, and that no traceback is printed. Unreachable servers are closed local
ports (refused at once: a port that listens but never answers would wait for the
timeouts), so no case waits.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@dataclass
class Case:
    """`setup(tmp_path, busy_port)` returns (command args, texts the message must contain)."""

    setup: Callable[[Path, int], tuple[list[str], list[str]]]
    status: int = 2
    max_lines: int = 2
    stream: str = "stderr"
    also: list[str] = field(default_factory=list)  # further texts anywhere in the output


def config(tmp_path: Path, **settings) -> Path:
    base = {
        "data_dir": str(tmp_path / "var"),
        "policy_paths": [str(DEFAULT_POLICY)],
        "listen": {"port": free_port()},
        "admin": {"enabled": False},
    }
    for key, value in settings.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def run_with(**settings) -> Callable[[Path, int], tuple[list[str], list[str]]]:
    def setup(tmp_path: Path, busy: int) -> tuple[list[str], list[str]]:
        values = {k: (v(tmp_path, busy) if callable(v) else v) for k, v in settings.items()}
        expected = [str(v) for v in _leaves(values)]
        return ["run", "-c", str(config(tmp_path, **values))], expected

    return setup


def _leaves(value) -> list:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def policy_file(text: str, name: str = "site.yaml") -> Callable[[Path, int], Path]:
    def make(tmp_path: Path, _busy: int) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return make


def a_file(tmp_path: Path, _busy: int) -> str:
    (tmp_path / "plain-file").write_text("not a folder\n")
    return str(tmp_path / "plain-file" / "var")


CASES: dict[str, Case] = {
    # -- run: start-up --------------------------------------------------------------------
    "run: Redis unreachable": Case(lambda t, b, c=free_port(): (["run", "-c", str(config(
        t, store_url=f"redis://:hunter2@127.0.0.1:{c}/0"))], ["store_url", f"127.0.0.1:{c}", "start Redis"])),
    "run: PostgreSQL unreachable": Case(lambda t, b, c=free_port(): (["run", "-c", str(config(
        t, database_url=f"postgresql://gw:hunter2@127.0.0.1:{c}/gw"))], ["database_url", f"127.0.0.1:{c}", "PostgreSQL"])),
    "run: policy missing": Case(run_with(policy_paths=lambda t, b: [str(t / "nope.yaml")])),
    "run: policy broken": Case(lambda t, b: (["run", "-c", str(config(
        t, policy_paths=[policy_file("sessions:\n  idle_timeout: 25x\n")(t, b)]))],
        ["site.yaml:2: sessions.idle_timeout", "25x"])),
    "run: policy with a bare-number duration names migrate": Case(lambda t, b: (["run", "-c", str(config(
        t, policy_paths=[policy_file("sessions:\n  idle_timeout: 25\n")(t, b)]))],
        ["site.yaml:2: sessions.idle_timeout", "did you mean 25m?", "pms-gateway policy migrate"])),
    "run: port taken": Case(lambda t, b: (["run", "-c", str(config(t, listen={"port": b}))],
                                          ["listen.port", f"127.0.0.1:{b}", "in use"])),
    "run: admin port taken": Case(lambda t, b: (["run", "-c", str(config(t, admin={"enabled": True, "port": b}))],
                                                ["admin.port", f"127.0.0.1:{b}", "in use"])),
    "run: key file missing": Case(run_with(key_file=lambda t, b: str(t / "keys" / "secret.key"))),
    "run: data dir not a folder": Case(run_with(data_dir=a_file)),
    "run: config key typo": Case(lambda t, b: (["run", "-c", str(config(t, store_ulr="memory://"))],
                                               ["config.yaml", "store_ulr", "pms-gateway config example"])),
    "run: config file missing": Case(lambda t, b: (["run", "-c", str(t / "missing.yaml")], ["missing.yaml"])),
    "run: workers with the memory store": Case(lambda t, b: (["run", "-c", str(config(t, listen={"workers": 2}))],
                                                            ["listen.workers is 2", "store_url", "redis://"])),
    # -- demo -----------------------------------------------------------------------------
    "demo: port taken": Case(lambda t, b: (["demo", "--port", str(b), "--pms-port", str(free_port()),
                                            "--data-dir", str(t / "demo")], ["--port", f"127.0.0.1:{b}"])),
    "demo: PMS port taken": Case(lambda t, b: (["demo", "--port", str(free_port()), "--pms-port", str(b),
                                                "--data-dir", str(t / "demo")], ["--pms-port", f"127.0.0.1:{b}"])),
    "demo: data dir not a folder": Case(lambda t, b: (["demo", "--port", str(free_port()), "--data-dir", a_file(t, b)],
                                                      ["--data-dir", "plain-file", "not a writable folder"])),
    # -- config check ---------------------------------------------------------------------
    "config check: Redis and PostgreSQL unreachable": Case(
        lambda t, _busy, b=free_port(): (["config", "check", "--connect", "-c", str(config(
            t, store_url=f"redis://127.0.0.1:{b}/0", database_url=f"postgresql://gw@127.0.0.1:{b}/gw",
            upstream={"url": f"http://127.0.0.1:{b}"}))],
            [f"FAIL store_url: Redis at redis://127.0.0.1:{b}/0", f"FAIL database_url: the database at postgresql://gw@127.0.0.1:{b}/gw",
             f"FAIL upstream.url: http://127.0.0.1:{b}/"]),
        status=1, stream="stdout", max_lines=20),
    "config check: broken policy and missing key": Case(
        lambda t, b: (["config", "check", "--no-connect", "-c", str(config(
            t, policy_paths=[policy_file("groups:\n  g:\n    networks: [lan]\n")(t, b)], key_file=str(t / "k.key")))],
            ["FAIL policy_paths:", "site.yaml:3: groups.g.networks.0: 'lan' is neither a name under `networks:`",
             f"FAIL key_file: {t / 'k.key'} not found"]),
        status=1, stream="stdout", max_lines=20),
    "config check: typo points to config example": Case(
        lambda t, b: (["config", "check", "--no-connect", "-c", str(config(t, listen={"prot": 1}))],
                      ["config.yaml", "listen.prot", "unknown key", "pms-gateway config example"]), status=1),
    "config check: unreadable GeoIP file": Case(
        lambda t, b: (["config", "check", "--no-connect", "-c", str(config(t, geoip={"city": str(t / "city.mmdb")}))],
                      [f"FAIL geoip.city: {t / 'city.mmdb'} cannot be read"]), status=1, stream="stdout", max_lines=20),
    # -- policy check ---------------------------------------------------------------------
    "policy check: duplicate section": Case(
        lambda t, b: (["policy", "check", policy_file(
            "sessions:\n  idle_ignore_paths: [^/api/refresh$]\nsessions:\n  max_devices: 2\n")(t, b)],
            ["site.yaml:3: sessions: duplicate key 'sessions' (first written on line 1)"]), status=1),
    "policy check: duration without a unit": Case(
        lambda t, b: (["policy", "check", policy_file("lockout:\n  per_user: {failures: 5, within: 900}\n")(t, b)],
                      ["site.yaml:2: lockout.per_user.within: 900 has no unit: did you mean 900m?"]), status=1),
    "policy check: undefined network in enrollment_networks": Case(
        lambda t, b: (["policy", "check", policy_file(
            "networks:\n  lan: [10.0.0.0/8]\nsecond_factor:\n  enrollment: trusted_networks\n"
            "  enrollment_networks: [lan, hotel_lan]\n")(t, b)],
            ["site.yaml:5: second_factor.enrollment_networks.1: 'hotel_lan' is neither a name under `networks:`"]),
        status=1),
    "policy check: undefined network in captcha.known_networks": Case(
        lambda t, b: (["policy", "check", policy_file("captcha:\n  known_networks: [office]\n")(t, b)],
                      ["site.yaml:2: captcha.known_networks.0: 'office'"]), status=1),
    "policy check: empty file": Case(
        lambda t, b: (["policy", "check", policy_file("# nothing yet\n")(t, b)], ["site.yaml", "the file is empty"]),
        status=1),
    "policy check: empty folder": Case(
        lambda t, b: (["policy", "check", str((t / "empty").mkdir() or t / "empty")], ["empty", "no *.yaml policy file"]),
        status=1),
    "policy check: extends a missing file": Case(
        lambda t, b: (["policy", "check", policy_file("extends: defaults.yaml\nsessions:\n  idle_timeout: 20m\n")(t, b)],
                      ["site.yaml:1: extends: 'defaults.yaml' not found"]), status=1),
}


@pytest.mark.parametrize("name", CASES)
def test_operator_error_is_one_sentence_naming_the_thing(tmp_path, busy_port, monkeypatch, name):
    case = CASES[name]
    args, expected = case.setup(tmp_path, busy_port)
    if args[0] in ("run", "demo"):  # start-up as an operator starts it: a process of its own
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        status = result.returncode
    else:  # the checks print and exit the same in-process, and the suite stays fast
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(app, args)
        status = result.exit_code
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    output = result.stdout + result.stderr
    assert status == case.status, output
    assert "Traceback" not in output
    message = getattr(result, case.stream)
    lines = [line for line in message.splitlines() if line.strip()]
    assert 1 <= len(lines) <= case.max_lines, output
    for text in expected:
        assert text in message, (text, output)
    assert "hunter2" not in output  # URLs are shown without their passwords


def test_debug_shows_the_traceback(tmp_path, busy_port):
    args = ["run", "--debug", "-c", str(config(tmp_path, listen={"port": busy_port}))]
    result = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" in result.stderr and "address already in use" in result.stderr


def test_policy_check_names_the_files_and_warns(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(
        "extends: " + str(DEFAULT_POLICY) + "\nsessions:\n  idle_timeout: 30s\nsecond_factor:\n  required: false\n"
    )
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"effective policy from: {DEFAULT_POLICY}, {site}" in result.stdout
    assert f"warning: {site}:3: sessions.idle_timeout: 30s is under a minute" in result.stdout
    assert f"warning: {site}:5: second_factor.required: no second factor" in result.stdout
    assert "notifications.unmatched_egress: pass while channels are defined" in result.stdout


def test_the_policies_folder_is_the_default_policy_and_strict_mode_is_named(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", "policies/"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "effective policy from: policies/default.yaml\n" in result.stdout
    assert "not loaded: policies/strict.yaml (it extends default.yaml" in result.stdout and "checked: ok" in result.stdout


def test_migrate_rewrites_a_formerly_valid_file_keeping_comments(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(
        "# front desk rules\n"
        "sessions:\n"
        "  idle_timeout: 25m\n"
        "  idle_ignore_paths: [^/api/refresh$]\n"
        "# longer days in summer\n"
        "sessions:\n"
        "  max_lifetime: 43200   # twelve hours\n"
        "lockout:\n"
        "  per_user: {failures: 5, within: 900, lock_for: 15m}\n"
    )
    cli = [sys.executable, "-m", "gateway.cli"]
    refused = subprocess.run([*cli, "policy", "check", str(site)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 1 and f"pms-gateway policy migrate {site}" in refused.stdout
    result = subprocess.run([*cli, "policy", "migrate", str(site)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "removed the first 'sessions'" in result.stdout and "idle_ignore_paths" in result.stdout
    assert "lockout.per_user.within: 900 -> 900s" in result.stdout
    assert site.read_text() == (
        "# front desk rules\n"
        "# longer days in summer\n"
        "sessions:\n"
        "  max_lifetime: 43200s   # twelve hours\n"
        "lockout:\n"
        "  per_user: {failures: 5, within: 900s, lock_for: 15m}\n"
    )
    checked = subprocess.run([*cli, "policy", "check", str(site)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert checked.returncode == 0, checked.stderr


async def test_reload_of_a_formerly_valid_file_keeps_the_policy_and_names_migrate(tmp_path):
    from structlog.testing import capture_logs

    from gateway.policy.reload import PolicyHolder

    site = tmp_path / "site.yaml"
    site.write_text("sessions:\n  idle_timeout: 10m\n")
    holder = PolicyHolder([site])
    site.write_text("sessions:\n  idle_timeout: 25\n")
    with capture_logs() as logs:
        assert holder.reload() is False
    assert holder().sessions.idle_timeout == 600
    assert any(entry.get("fix") == f"run: pms-gateway policy migrate {site}" for entry in logs), logs
