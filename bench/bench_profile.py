"""What the proxy benchmark reports about its tools and machine, and how it reads a
py-spy profile: own and inclusive time per function, own time per package."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def py_spy_path() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def short_file(file: str) -> str:
    """py-spy already shortens paths to the import path (aiohttp/web.py); finish the job."""
    path = file.replace("\\", "/")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker.startswith("/lib") and "/" in rest else rest
    return path


def package_of(file: str) -> str:
    """The top-level package a (shortened) source file belongs to; stdlib modules say so."""
    path = short_file(file)
    if not path or path.startswith("<"):
        return "other"
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return f"{top} (stdlib)"
    return top


_IDLE_POOL_LOOP = "_worker (concurrent/futures/thread.py"


def summarise_profile(raw: str) -> dict:
    """Own and inclusive sample shares per function and own share per package."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    other_threads: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("thread ("):  # --threads: keep the event loop's thread
            thread = frames.pop(0)
            if not thread.endswith("MainThread"):
                leaf = frames[-1] if frames else thread
                # A pool thread whose innermost frame is the pool's own loop is waiting for
                # work (a lock wait py-spy cannot tell from running): not CPU of the gateway.
                if not leaf.startswith(_IDLE_POOL_LOOP):
                    other_threads[leaf.split(" (")[0]] += n
                continue
        if not frames:
            continue
        total += n
        leaf_func, leaf_file = frame_parts(frames[-1])
        own[(leaf_func, short_file(leaf_file))] += n
        packages[package_of(leaf_file)] += n
        seen = set()
        for frame in frames:
            key = frame_parts(frame)
            key = (key[0], short_file(key[1]))
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    gateway_inclusive = [
        (key, n) for key, n in inclusive.most_common()
        if key[1].startswith("gateway/") and key[1] not in ("gateway/cli.py", "gateway/serve.py")
    ]
    return {
        "samples": total,
        "other_threads": other_threads.most_common(5),
        "own": [(f"{func} ({file})", n / total) for (func, file), n in own.most_common(15)] if total else [],
        "packages": [(name, n / total) for name, n in packages.most_common()] if total else [],
        "gateway_inclusive": [(f"{func} ({file})", n / total) for (func, file), n in gateway_inclusive[:8]] if total else [],
    }


def machine_info() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    def tool_version(cmd: list[str], pattern: str) -> str:
        if shutil.which(cmd[0]) is None:
            return "absent"
        with contextlib.suppress(Exception):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            match = re.search(pattern, done.stdout + done.stderr)
            if match:
                return match.group(1)
        return "unknown"

    commit = "unknown"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, timeout=5).stdout.strip() or "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "nginx": tool_version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": tool_version(["wrk", "--version"], r"wrk (\S+)"),
        "py-spy": tool_version([py_spy_path() or "py-spy", "--version"], r"py-spy (\S+)"),
        "commit": commit,
    }
