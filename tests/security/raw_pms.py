"""A PMS on raw sockets and a browser on raw sockets, for the lean engine's attack tests.

`RawPms` answers by path and records which connection carried each request, so a test
can tell whether the gateway reused a connection after an answer that did not provably
end (user B must never read user A's page). Its hostile paths answer in the ways a broken
or malicious PMS could: a body after a 204, a trailer carrying Set-Cookie, an answer
before the request body was read, a head and then silence, a header without end.

The browser helpers write bytes as given and read answers framed by Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


def page(text: str, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n%sContent-Length: %d\r\n\r\n%b" % (
        extra, len(text), text.encode())


# Answers written whole, then the connection stays open for the next request.
KEPT = {
    "/head-with-body": None,  # by method: see `RawPms.answer`
    "/extra": page("page of A") + page("page of A, again"),  # a second answer nobody asked for
    "/hints": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + page("page of A"),
    "/204-body": b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\npage of A",
    "/304-body": b"HTTP/1.1 304 Not Modified\r\n\r\n" + page("page of A"),
    "/longer": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + page("page of A"),
    "/trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                b"Set-Cookie: PMSSESSID=planted\r\nLocation: https://evil.example/\r\n\r\n",
    "/204-length": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "/big-field": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\nok",
    "/status-0": b"HTTP/1.1 000 Zero\r\nContent-Length: 9\r\n\r\npage of A",
}
# Answers after which the PMS closes the connection.
CLOSED = {
    "/until-close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npage of A",
    "/xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n" + page("page of A"),
    "/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"A" * 70000,  # promises more than it sends
}


@dataclass
class RawPms:
    connections: int = 0
    requests: list[tuple[int, str, str]] = field(default_factory=list)  # (connection, method, target)
    bodies: list[bytes] = field(default_factory=list)
    close_second: bool = False  # close a kept connection when its second request arrives, unanswered

    def paths(self) -> list[str]:
        return [target for _, _, target in self.requests]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = (part.decode() for part in head.split(b" ")[:2])
                self.requests.append((conn, method, target))
                if self.close_second and served == 1:
                    break
                if target != "/early":  # answers before reading the body, which stays unread
                    self.bodies.append(await _read_body(reader, head))
                served += 1
                if not await self.answer(method, target, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def answer(self, method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        if target.startswith("/user?name="):
            writer.write(page("page of " + target.split("=", 1)[1]))
        elif target == "/head-with-body":  # a HEAD answered with a body anyway
            writer.write(page("page of A") if method == "HEAD" else page("x"))
        elif target in KEPT:
            writer.write(KEPT[target])  # type: ignore[arg-type]
        elif target in CLOSED:
            writer.write(CLOSED[target])
            await writer.drain()
            return False
        elif target == "/early":
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n")
        elif target == "/stall":  # a head, then silence
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            await writer.drain()
            await asyncio.Event().wait()
        elif target == "/slowbig":  # part of a large body, then silence
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"A" * 100_000)
            await writer.drain()
            await asyncio.Event().wait()
        elif target.startswith("/big"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
            for _ in range(20):
                writer.write(b"A" * 100_000)
                await writer.drain()
        elif target.startswith("/page60k"):
            writer.write(page("b" * 60_000))
        else:
            writer.write(page("unknown"))
        await writer.drain()
        return True


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length:
        return await reader.readexactly(int(length.group(1)))
    if re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
        return body
    return b""


@contextlib.asynccontextmanager
async def raw_pms(**options: bool) -> AsyncIterator[tuple[RawPms, str]]:
    pms = RawPms(**options)
    server = await asyncio.start_server(pms.handle, "127.0.0.1", 0, limit=1024 * 1024)  # heads up to 1 MiB
    try:
        yield pms, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


# -- the browser side -------------------------------------------------------------------------

def get(path: str, port: int, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer framed by Content-Length (or none); header names lowered, last one wins."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return status, headers, body


async def fetch(port: int, path: str, method: str = "GET", extra: str = "") -> tuple[int, bytes, bytes]:
    """One request on its own connection, read until the gateway closes: (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(path, port, extra + "Connection: close\r\n", method))
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for a condition of the gateway's state (never a fixed sleep)."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def lean_connections(gw) -> set:
    """The browser connections of a lean-engine gateway under test (white-box checks)."""
    sites = [site for site in gw.running.runner.sites if hasattr(site, "_lean")]
    return sites[0]._lean.connections
