"""Attacks on the audit writer process: what crosses the link, and what the processes hold.

- Records with long paths and queries, piled up while the writer is stalled (SIGSTOP) and
  then re-sent to its successor after a kill -9: all of them once went out as one frame,
  and past 256 MB the writer refused it as a broken link, died, was sent it again, for
  ever, storing nothing. Re-sent records now go in frames of bounded size, in sequence.
- The writer and the zygote it is forked from hold no descriptor of the gateway's beyond
  their own link: not a listening socket (even one marked inheritable), not an open key
  file; the link is an anonymous socket pair, so nobody else can write a frame to it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
from pathlib import Path

import pytest

from gateway.audit import writer_link
from gateway.audit.writer_link import Records, records_frames
from gateway.audit.writer_zygote import Zygote
from gateway.policy.schema import AuditPolicy, Policy
from tests.test_audit_writer_process import entry, open_stack, until

pytestmark = pytest.mark.slow


def _decoded(frames: list[bytes]) -> list[Records]:
    messages = []
    for data in frames:
        (length,) = writer_link._LENGTH.unpack(data[:4])
        assert length == len(data) - 4
        messages.append(pickle.loads(data[4:]))
    return messages


def test_a_long_run_of_records_goes_out_in_bounded_frames_numbered_in_sequence(monkeypatch) -> None:
    rows = [(n % 2 == 0, ("req", n, "/p/" + "x" * (n % 50))) for n in range(1000)]
    messages = _decoded(records_frames(41, True, rows, 256))
    assert [len(m.rows) for m in messages] == [256, 256, 256, 232]
    assert [m.first_seq for m in messages] == [41, 297, 553, 809]
    assert all(m.resent for m in messages)
    assert [row for m in messages for row in m.rows] == rows
    # Rows larger than expected: frames are split further, still in sequence.
    monkeypatch.setattr(writer_link, "MAX_FRAME", 40_000)
    big = [(False, ("req", n, "/" + "y" * 3000)) for n in range(100)]
    frames = records_frames(1, False, big, 256)
    assert all(len(data) <= 40_000 // 4 for data in frames)
    messages = _decoded(frames)
    assert [row for m in messages for row in m.rows] == big
    seq = 1
    for message in messages:
        assert message.first_seq == seq
        seq += len(message.rows)


async def test_long_records_held_by_a_stalled_writer_reach_its_successor_in_order(tmp_path: Path) -> None:
    """SIGSTOP the writer, pile up records with 8 KB paths and queries, kill -9 it: the
    next writer gets them over several frames and stores each once, in order."""
    policy = Policy(audit=AuditPolicy(batch_size=100, flush_interval=0.05))
    long_path, long_query = "/a" * 4000, "q=" + "b" * 8000
    async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy) as stack:
        writer = stack.writer
        await writer.put_durable(entry(0))
        stalled = writer.pid
        assert stalled is not None
        os.kill(stalled, signal.SIGSTOP)
        count = 700
        for n in range(1, count):
            record = entry(n)
            record.path, record.query = f"{long_path}/{n}", long_query
            writer.force(record)
        await asyncio.sleep(0)
        assert writer.queued == count - 1
        os.kill(stalled, signal.SIGKILL)
        await until(lambda: _true(writer.restarts == 1 and writer.queued == 0), "the successor stored them")
        paths = await stack.paths()
        assert paths == ["/p/0"] + [f"{long_path}/{n}" for n in range(1, count)]
        assert await stack.verified()


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
        found.add(target)
    return found


async def test_writer_and_zygote_hold_no_listening_socket_nor_key_file(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)  # even one a careless caller left inheritable
    key_file = tmp_path / "tls.key"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\n")
    key = open(key_file)  # noqa: SIM115 - held open on purpose while the writer starts
    os.set_inheritable(key.fileno(), True)
    forks = Zygote()
    try:
        policy = Policy(audit=AuditPolicy(flush_interval=0.05))
        async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy, forks=forks) as stack:
            await stack.writer.put_durable(entry(0))
            forbidden = {f"socket:[{os.fstat(listener.fileno()).st_ino}]", str(key_file)}
            for pid in (stack.writer.pid, forks.pid):
                assert pid is not None
                held = _socket_inodes(pid)
                assert not held & forbidden, f"process {pid} holds {held & forbidden}"
                sockets = [t for t in held if t.startswith("socket:")]
                assert len(sockets) <= 3  # its link (and an event loop's self-pipe pair)
            # The link is an anonymous pair: no path in the file system to connect to.
            unix = Path("/proc/net/unix").read_text().splitlines()[1:]
            writer_inodes = {t[len("socket:["):-1] for t in _socket_inodes(stack.writer.pid) if t.startswith("socket:")}
            for line in unix:
                fields = line.split()
                if fields[6] in writer_inodes:
                    assert len(fields) < 8, f"the writer's socket has a path: {fields[7]}"
    finally:
        forks.close()
        listener.close()
        key.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_stalled_writer_is_replaced_and_its_records_stored(tmp_path: Path, monkeypatch) -> None:
    """SIGSTOP: the writer neither dies nor answers. Without a watchdog nothing replaced
    it: records piled up until the queue was full and every request was refused, for as
    long as it stayed stopped. Now it is killed once silent past its bound."""
    from gateway.audit import writer_process

    monkeypatch.setattr(writer_process, "STALL_GRACE", 0.3)
    policy = Policy(audit=AuditPolicy(flush_interval=0.05))
    async with open_stack(tmp_path, f"sqlite:///{tmp_path}/gateway.db", policy) as stack:
        writer = stack.writer
        await writer.put_durable(entry(0))
        stalled = writer.pid
        assert stalled is not None
        os.kill(stalled, signal.SIGSTOP)
        for n in range(1, 50):
            assert writer.offer(entry(n))
        await until(lambda: _true(writer.restarts == 1 and writer.queued == 0), "a successor stored them")
        assert writer.pid != stalled
        assert await stack.paths() == [f"/p/{n}" for n in range(50)]
        assert await stack.verified()


async def test_a_writer_failing_before_its_logging_is_set_up_prints_no_secret(tmp_path: Path) -> None:
    """A frame after `Start` the writer cannot read (a version skew, a bug): the failure is
    logged, but structlog's default set-up (in force until `Start` configured logging)
    printed every local of every frame with rich installed: the database password and the
    audit keys of `Start` among them."""
    import subprocess
    import sys

    from gateway.audit.keys import AuditKeys
    from gateway.audit.writer_link import Start, frame
    from gateway.config import GeoipSettings

    secret = "hunter2-" + os.urandom(4).hex()
    keys = AuditKeys.from_master(os.urandom(32))
    start = Start(f"postgresql://gw:{secret}@127.0.0.1:1/gw", 1, keys, tmp_path / "spool", "gw-test",
                  GeoipSettings(), "console", "info")
    gateway_end, child_end = socket.socketpair()
    process = subprocess.Popen([sys.executable, "-m", "gateway.audit.writer_child", str(child_end.fileno())],
                               pass_fds=(child_end.fileno(),), stderr=subprocess.STDOUT, stdout=subprocess.PIPE,
                               cwd=Path(__file__).parent.parent.parent)
    child_end.close()
    try:
        gateway_end.sendall(frame(start) + writer_link._LENGTH.pack(3) + b"bad")
        err, _ = await asyncio.to_thread(process.communicate, timeout=60)  # stdout and stderr
    finally:
        gateway_end.close()
    assert process.returncode != 0
    assert b"audit writer process failed" in err
    assert secret.encode() not in err
    assert keys.chain.hex().encode() not in err and repr(keys.chain).encode() not in err
