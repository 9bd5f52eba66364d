"""Audit writer processes forked from one preloaded process (a "zygote").

Starting a writer as a fresh interpreter costs its imports (SQLAlchemy, the database
drivers, cryptography, structlog: 0.3-0.7 s of CPU on the bench machine) on every start
and restart. Instead each gateway process starts this small server once (it imports
the writer's modules, then waits), and asks it for a writer by sending it the writer's
end of a socket pair (SCM_RIGHTS); the server forks, the fork runs the writer on that
socket, and the server answers with its pid. A fork of a process that has no threads and
no event loop is safe, and takes milliseconds.

The server ignores SIGINT and SIGTERM like the writers (they must outlive their
gateway's drain), reaps its forks itself, and exits when its gateway closes the control
socket (or dies). Writers it forked keep running until their own link closes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import os
import signal
import socket
import struct
import subprocess
import sys

_PID = struct.Struct(">i")


class Zygote:
    """The gateway's side: one server per gateway process, started on first use and again
    if it died."""

    def __init__(self, module: str = "gateway.audit.writer_zygote") -> None:
        self._module = module
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def fork(self, child_end: socket.socket) -> int:
        """A new writer process serving `child_end`; its pid. Raises OSError if none
        could be started."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # tests run one loop per test
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            for attempt in (1, 2):
                control = self._control if self._alive() else self._start()
                try:
                    socket.send_fds(control, [b"f"], [child_end.fileno()])
                    answer = b""
                    while len(answer) < _PID.size:
                        part = await loop.sock_recv(control, _PID.size - len(answer))
                        if not part:
                            raise ConnectionError("the audit writer zygote exited")
                        answer += part
                    return int(_PID.unpack(answer)[0])
                except OSError:
                    self.close()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None and self._control is not None

    def _start(self) -> socket.socket:
        self.close()
        parent_end, zygote_end = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self._module, str(zygote_end.fileno())],
                pass_fds=(zygote_end.fileno(),), stdin=subprocess.DEVNULL,
            )
        finally:
            zygote_end.close()
        parent_end.setblocking(False)
        self._control = parent_end
        return parent_end

    def close(self, wait: float = 0.0) -> None:
        """Let the server go (it exits when the control socket closes); writers stay."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(wait)
            self._process = None


_zygotes: dict[int, Zygote] = {}


@atexit.register
def _close_zygotes() -> None:
    for forks in _zygotes.values():
        forks.close(wait=1.0)


def zygote() -> Zygote:
    """This process's zygote (keyed by pid: a forked copy of a gateway gets its own)."""
    return _zygotes.setdefault(os.getpid(), Zygote())


def serve(control: socket.socket) -> None:
    """The server loop: one fork per request, until the control socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    from gateway.audit import writer_child  # the imports every writer needs, done once

    gc.collect()
    gc.freeze()  # what was imported stays shared with the forks
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 16, 4)
        except OSError:
            return
        if not message:
            return  # the gateway is gone
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os._exit(writer_child.run(fds[0]))
        os.close(fds[0])
        control.sendall(_PID.pack(pid))


def main() -> None:
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
