"""The running policy: loaded once, reloaded when its files change, last good one kept.

A broken edit must never take the gateway down or leave it half-configured: the new files
are validated as a whole and swapped in atomically, or rejected with the errors logged.
The watcher survives anything one round can throw (a file vanishing mid-read, a loader
bug): a watcher that died silently would ignore every later edit, fixes included.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from gateway.policy.errors import ConfigError, migrate_hint
from gateway.policy.loader import load_policy_files, policy_file_candidates
from gateway.policy.schema import Policy

log = structlog.get_logger("gateway.policy")


class PolicyHolder:
    def __init__(self, paths: list[Path], policy: Policy | None = None) -> None:
        self.paths = paths
        self._loaded_files: list[Path] = []  # incl. bases named by `extends`, watched too
        self.current: Policy = policy if policy is not None else self._load()
        self._stamp = self._mtimes()
        self._task: asyncio.Task | None = None
        self.last_rejection: str | None = None  # why the newest files were refused; None once loaded
        self.loaded_at = time.time()  # when the current policy took effect (the console shows it)
        self.checked_at = self.loaded_at  # when the files were last read, whatever the outcome

    def __call__(self) -> Policy:
        return self.current

    def _load(self) -> Policy:
        loaded = load_policy_files(*self.paths)
        if loaded.files != self._loaded_files:  # at start, and when the composition changes
            log.info("policy files", files=[str(f) for f in loaded.files],
                     not_loaded=[f"{f} (extends {', '.join(bases)}: name it in policy_paths to use it)"
                                 for f, bases in loaded.skipped])
        self._loaded_files = loaded.files
        return loaded.policy

    def _files(self) -> list[Path]:
        return list(dict.fromkeys([*policy_file_candidates(self.paths), *self._loaded_files]))

    def _mtimes(self) -> tuple:
        stamp = []
        for file in self._files():
            try:
                status = file.stat()
                stamp.append((str(file), status.st_mtime_ns, status.st_size))
            except OSError:
                stamp.append((str(file), None, None))
        return tuple(stamp)

    def reload(self) -> bool:
        """Load the files again; True when a new policy took effect."""
        self._stamp = self._mtimes()
        self.checked_at = time.time()
        try:
            self.current = self._load()
        except ConfigError as exc:
            self.last_rejection = str(exc)
            fix = migrate_hint(exc)  # a file valid before the loader grew stricter
            log.error("policy reload rejected; keeping the last good policy", errors=str(exc).splitlines(),
                      **({"fix": f"run: {fix}"} if fix else {}))
            return False
        except Exception as exc:  # a loader bug must not end the watcher nor swap in half a policy
            self.last_rejection = f"{type(exc).__name__}: {exc}"
            log.exception("policy reload failed; keeping the last good policy", error=self.last_rejection)
            return False
        self.last_rejection = None
        self.loaded_at = self.checked_at
        log.info("policy reloaded", files=[str(f) for f in self._files()])
        return True

    @property
    def watching(self) -> bool:
        """The watcher task is alive (it should only ever stop through `stop()`)."""
        return self._task is not None and not self._task.done()

    def start_watching(self, interval: float = 2.0) -> None:
        if self.paths and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self._mtimes() != self._stamp:
                    await asyncio.to_thread(self.reload)  # parsing must not stall requests
            except Exception:  # e.g. the folder became unreadable: try again next round
                log.exception("policy watcher round failed; still watching")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
