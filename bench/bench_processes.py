"""The proxy benchmark's processes: starting, pinning, waiting for and stopping them, and
accounting for the CPU each used (and what other jobs on the machine took meanwhile)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if can_pin() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every subprocess this run starts; all are stopped on exit, whatever happened.

    Each child gets a session (and process group) of its own, so Ctrl+C reaches only this
    script, which then stops them in order; their output goes to files in the work dir.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.out", "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        out.close()
        self.started.append((name, proc))
        return proc

    def output(self, name: str) -> str:
        path = self.workdir / f"{name}.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _name, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            # a group may outlive its leader (nginx's worker): end what is left of it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.started.clear()


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, proc: subprocess.Popen, procs: Processes, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.output(name)}")
        try:
            status, _ = http_get(url, timeout=1)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} after {timeout}s ({last}):\n{procs.output(name)}")


# CPU accounting: what each of our processes used, and what others took meanwhile

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def core_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per core from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(v) for v in values[:8]]
                idle = numbers[3] + numbers[4]  # idle + iowait
                out[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return out


def group_ticks(pgids: dict[str, int]) -> dict[str, int]:
    """utime+stime of every live process in each of our process groups (nginx's worker too)."""
    wanted = {pgid: name for name, pgid in pgids.items()}
    out = dict.fromkeys(pgids, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        name = wanted.get(int(fields[2]))
        if name is not None:
            out[name] += int(fields[11]) + int(fields[12])
    return out


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group (a gateway's workers and helper processes)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(Path(entry.path, "stat").read_text().rpartition(")")[2].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def children_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSnapshot:
    at: float
    cores: dict[int, tuple[int, int]]
    groups: dict[str, int]
    children: float

    @classmethod
    def take(cls, pgids: dict[str, int]) -> CpuSnapshot:
        return cls(time.monotonic(), core_ticks(), group_ticks(pgids), children_seconds())


@dataclass
class CpuUse:
    seconds: float
    per_process: dict[str, float]  # CPU seconds of each server process (group)
    loadgen: float  # CPU seconds of the finished load generators
    other_pct: float  # CPU taken by everything else (other jobs on the machine), % of one core

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
        seconds = b.at - a.at
        per_process = {name: (b.groups.get(name, 0) - ticks) / TICK for name, ticks in a.groups.items()}
        loadgen = b.children - a.children
        busy = sum(b.cores[c][0] - a.cores[c][0] for c in b.cores if c in a.cores) / TICK
        other = max(0.0, busy - sum(per_process.values()) - loadgen)
        return cls(seconds, per_process, loadgen, 100 * other / seconds if seconds else 0.0)


def process_times(pid: int) -> tuple[int, int]:
    """(user, kernel) clock ticks of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0, 0
    return int(fields[11]), int(fields[12])
