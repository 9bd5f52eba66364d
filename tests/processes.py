"""Running the gateway and the demo PMS as real processes, as an operator would."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.harness import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_http(
    url: str, timeout: float = 20.0, process: subprocess.Popen | None = None, context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def demo_pms_process(**args: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "gateway.demo", "--port", str(port)]
    for key, value in args.items():
        command += [f"--{key.replace('_', '-')}", value]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/login", process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path,
    upstream_url: str,
    policy: dict | None = None,
    config: dict | None = None,
    tls_ca: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`pms-gateway run` with a config file written for this test; yields (url, process).

    With `tls_ca` the listener is expected to speak TLS (config `listen.tls_cert`), and the
    URL is https, trusted through that CA file."""
    port = free_port()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy or {}))
    settings = {
        "public_urls": [f"http://127.0.0.1:{port}"],
        "listen": {"host": "127.0.0.1", "port": port},
        "upstream": {"url": upstream_url},
        "policy_paths": [str(policy_file)],
        "data_dir": str(tmp_path / "var"),
        "admin": {"enabled": False},
        "log": {"format": "json", "level": "info"},
    }
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            settings.setdefault(key, {}).update(value)
        else:
            settings[key] = value
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    log_file = open(tmp_path / "gateway.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_file)],
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    try:
        wait_http(url + "/_gateway/health", process=process, context=context)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        log_file.close()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")
