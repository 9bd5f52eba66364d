"""README's quick start and "Put the gateway in front of a real PMS", run as written
(issue 10), and the demo they start from (item 6).

The test starts `pms-gateway demo` itself, as `make demo` does, in a work folder laid out
like a checkout (`.venv`, `policies` linked in; the demo's data in `var/demo`; a
`config.yaml`, the demo's own, where the README's commands expect the operator's). Every
fenced `sh` block of the two sections, and every `$ ` line of their unlabelled blocks, is
then run by a shell in that folder with the virtualenv first on PATH, and must exit 0.

What is changed, and why, is explicit:
- SUBSTITUTIONS: the README's example PMS address (10.0.0.5:8081) is the demo PMS here,
  and the placeholder test account of `login discover` is a demo account.
- SKIPPED: commands that cannot run here, each with its reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
pytestmark = pytest.mark.slow  # a real demo and some fifteen command-line processes

SECTIONS = ("## Quick start", "## Put the gateway in front of a real PMS")

SKIPPED = {
    "make demo": "the test starts the same `pms-gateway demo` itself (make would also reinstall the venv)",
    "make test": "runs the whole suite, this test included",
    "nft add rule": "changes the firewall of the PMS host (root, another machine)",
}


def substitutions(demo: Demo) -> dict[str, str]:
    return {
        "http://10.0.0.5:8081": demo.pms_url,  # the example PMS: the demo PMS here
        "PMS_PW='...'": "PMS_PW='alice-demo-pw'",  # the placeholder password of ...
        "--username it-test": "--username alice",  # ... the IT test account: a demo account
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_commands() -> list[str]:
    """The commands of the two sections: fenced sh blocks, and `$ ` lines of unlabelled blocks."""
    text = README.read_text(encoding="utf-8")
    commands: list[str] = []
    for title in SECTIONS:
        start = text.index(title + "\n")
        end = text.find("\n## ", start + len(title))
        section = text[start:end if end != -1 else None]
        for language, body in re.findall(r"^ *```(\w*)\n(.*?)^ *```", section, re.MULTILINE | re.DOTALL):
            for line in (raw.strip() for raw in body.splitlines()):
                if language == "sh" and line and not line.startswith("#"):
                    commands.append(line)
                elif language == "" and line.startswith("$ "):
                    commands.append(line[2:])
    return commands


@dataclass
class Demo:
    folder: Path
    url: str
    pms_url: str
    admin_url: str
    output: str

    @property
    def config(self) -> Path:
        return self.folder / "var" / "demo" / "config.yaml"

    def shell(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
        env = {k: v for k, v in env.items() if not k.startswith("PMS_GATEWAY_")}
        return subprocess.run(["bash", "-c", "set -o pipefail; " + command], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("checkout")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    (folder / "policies").symlink_to(ROOT / "policies")
    port, pms_port, admin_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [str(VENV_BIN / "pms-gateway"), "demo", "--port", str(port), "--pms-port", str(pms_port),
         "--admin-port", str(admin_port)],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PMS_GATEWAY_")},
    )
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Stop with Ctrl+C" in line:
                break
        output = "".join(lines)
        assert "Stop with Ctrl+C" in output, output
        shutil.copy(folder / "var" / "demo" / "config.yaml", folder / "config.yaml")  # "the operator's"
        yield Demo(folder, f"http://localhost:{port}", f"http://127.0.0.1:{pms_port}",
                   f"http://127.0.0.1:{admin_port}", output)
    finally:
        process.terminate()
        process.wait(15)


def test_the_sections_have_commands() -> None:
    commands = readme_commands()
    assert any(c.startswith("make demo") for c in commands)
    assert any("login discover" in c for c in commands) and any("api-clients list" in c for c in commands)


def test_every_readme_command_runs_as_written(demo: Demo) -> None:
    ran = []
    for command in readme_commands():
        if any(command.startswith(start) for start in SKIPPED):
            continue
        for example, here in substitutions(demo).items():
            command = command.replace(example, here)
        result = demo.shell(command)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, command
        ran.append(command)
    assert len(ran) >= 8, ran


# -- the demo teaches the product (item 6) ---------------------------------------------------


def test_the_demo_prints_a_host_name_url_and_the_admin_listener(demo: Demo) -> None:
    assert f"Demo PMS behind the gateway: {demo.url}/" in demo.output
    assert f"Admin listener (operator console, /metrics, /health): {demo.admin_url}/" in demo.output
    with urllib.request.urlopen(demo.admin_url + "/health", timeout=5) as answer:
        assert answer.status == 200


def test_every_hint_names_the_program_and_the_config(demo: Demo) -> None:
    assert ".venv/bin/pms-gateway --help" in demo.output
    assert "source .venv/bin/activate" in demo.output
    hints = [line.split(":", 1)[1].strip() for line in demo.output.splitlines()
             if line.startswith("    ") and ".venv/bin/pms-gateway" in line]
    assert len(hints) >= 3, demo.output
    for hint in hints:
        assert hint.startswith(".venv/bin/pms-gateway ") and hint.endswith(f"-c {demo.config.relative_to(demo.folder)}")
        command = hint.replace("NAME", "alice").replace(" -f ", " ")  # tail once, not for ever
        result = demo.shell(command)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def test_the_favicon_is_public_and_audited_once(demo: Demo) -> None:
    request = urllib.request.Request(demo.url + "/favicon.ico", headers={"Sec-Fetch-Dest": "image"})
    with urllib.request.urlopen(request, timeout=5) as answer:  # a redirect would be followed to /login
        assert answer.status == 200 and answer.url.endswith("/favicon.ico")
        assert answer.headers["Content-Type"].startswith("image/")
    for _ in range(5):
        time.sleep(0.5)  # the audit writer flushes every 0.25 s
        result = demo.shell(f"pms-gateway audit query --format jsonl --path /favicon.ico -c {demo.config}")
        records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if records:
            break
    assert [(r["path"], r["status"]) for r in records] == [("/favicon.ico", 200)]
    result = demo.shell(f"pms-gateway audit query --format jsonl --path /login -c {demo.config}")
    assert '"/login?next=%2Ffavicon.ico"' not in result.stdout and "favicon" not in result.stdout
