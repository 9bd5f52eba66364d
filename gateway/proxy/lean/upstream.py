"""Keep-alive connections to the PMS, answers parsed with httptools (llhttp).

A connection goes back to the pool only when its answer provably ended exactly where the
next one will begin: the answer was framed (Content-Length or chunked) and read to its
end, the PMS did not ask to close, no 1xx or upgrade came first, it was not the answer to
HEAD (llhttp cannot be told that a HEAD answer has no body), the request carried no body,
and no byte arrived beyond the answer. Anything else closes the connection: one user's
page must never be read as the start of another user's answer.

No body, because whether the PMS read it cannot be known: a PMS that answers some path
without reading the body (a "CL.0" server: a static file, a redirect, an early 401) keeps
it in its buffer, and the next request on the connection, another user's, would be read
after it, as the rest of a request the body's author wrote. Requests with bodies are the
few (form posts); each gets a fresh connection. When the PMS answers while the body is
still going up, the rest is not sent.

What the PMS sends is bounded too: a header field (which httptools accumulates before
handing it over), the number of fields, and the body buffered ahead of the browser.
Trailers are read and dropped: they never become headers of the answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator

import httptools

_HIGH_WATER = 256 * 1024  # buffered answer bytes before the PMS socket stops being read
_LOW_WATER = 64 * 1024
_MAX_FIELD = 64 * 1024  # one status line or header field of an answer (aiohttp's client: 8190)
_MAX_FIELDS = 1000  # header fields of one answer


class UpstreamClosed(Exception):
    """The PMS closed the connection or sent what is not HTTP before its answer ended."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # some byte of an answer had arrived


class Head:
    """Status line and headers of an answer (raw header bytes, decoded on demand)."""

    __slots__ = ("status", "reason", "raw_headers")

    def __init__(self, status: int, reason: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.reason = reason
        self.raw_headers = raw_headers


class UpstreamConnection(asyncio.Protocol):
    """One connection to the PMS, used by one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._busy = False
        self._reset()
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    def _reset(self) -> None:
        self._head: Head | None = None
        self._head_waiter: asyncio.Future[Head] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._framed = False
        self._until_close = False
        self._head_only = False
        self._informational = False
        self._skip = False
        self._extra = False
        self._messages = 0
        self._error: Exception | None = None
        self._reading_paused = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._carried_body = False
        self._keep_alive = False
        self._unparsed = 0  # bytes fed since httptools last handed something over (see data_received)

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._complete:
            # Bytes nobody asked for, or beyond the end of the answer: never read them as
            # the start of the next user's answer.
            self._extra = True
            self._close()
            return
        self._unparsed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamClosed("the PMS switched protocols", answered=True))
            return
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"malformed answer from the PMS: {exc}", answered=self._messages > 0))
            return
        if self._unparsed > _MAX_FIELD:
            # httptools keeps a header field in memory until it ends: a PMS sending one
            # without end would fill it. Every callback resets the count, so what is
            # counted here is one field still being received.
            self._fail(UpstreamClosed("a header field of the PMS's answer is too large", answered=True))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides what the end meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._busy and not self._complete:
            if self._until_close and self._head is not None:
                self._complete = True  # a read-until-close answer ends here
                self._wake_body()
            else:
                self._fail(UpstreamClosed("the PMS closed the connection", answered=self._messages > 0))
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages += 1
        if self._head is not None:
            self._extra = True  # a second answer to one request
        self._raw_headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._unparsed = 0
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._unparsed = 0
        if len(name) + len(value) > _MAX_FIELD:
            raise UpstreamClosed("a header field of the PMS's answer is too large", answered=True)
        if self._head is not None:
            return  # a trailer (or a header of an answer nobody asked for): never a header of the answer
        self._raw_headers.append((name, value))
        if len(self._raw_headers) > _MAX_FIELDS:
            raise UpstreamClosed("too many header fields in the PMS's answer", answered=True)

    def on_headers_complete(self) -> None:
        self._unparsed = 0
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamClosed("the PMS switched protocols", answered=True)
            if status < 100:
                raise UpstreamClosed(f"status {status} from the PMS", answered=True)
            self._informational = self._skip = True  # 100/103: wait for the real answer
            return
        if self._head is not None:
            return  # a second answer to one request (`on_message_begin` marked it): the first stands
        head = Head(status, self._reason, self._raw_headers)
        self._head = head
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the answer ends
        framed = False
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and _chunked_last(value)):
                framed = True
        bodiless = status in (204, 304)
        self._framed = framed or bodiless
        self._until_close = not self._framed and not self._head_only
        if self._head_only:
            self._complete = True  # nothing follows; the connection is not reused (see module doc)
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(head)

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        if self._skip or self._complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_chunk_header(self) -> None:
        self._unparsed = 0

    def on_chunk_complete(self) -> None:
        self._unparsed = 0

    def on_message_complete(self) -> None:
        self._unparsed = 0
        if self._skip:
            self._skip = False
            return
        self._complete = True
        self._wake_body()

    # -- used by the forwarder ---------------------------------------------------------------

    async def exchange(self, head: bytes, body: bytes | AsyncIterator[bytes] | None, *,
                       chunked: bool, length: int | None, head_only: bool) -> Head:
        """Send one request and wait for the head of its answer."""
        self._busy = True
        self._head_only = head_only
        self._carried_body = bool(body)  # an iterator, or bytes that are not empty
        transport = self.transport
        if transport is None or self.closed:
            raise UpstreamClosed("connection closed before use", answered=False)
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            await self._send_stream(body, chunked=chunked, length=length)
        if self._head is not None:
            return self._head
        if self._error is not None:
            raise self._error
        self._head_waiter = self._loop.create_future()
        timer = self._loop.call_later(self._read_timeout, self._timed_out)
        try:
            return await self._head_waiter
        finally:
            timer.cancel()
            self._head_waiter = None

    async def _send_stream(self, body: AsyncIterator[bytes], *, chunked: bool, length: int | None) -> None:
        """Send the body as it arrives; stop when the PMS already gave its answer (it will
        not read the rest: relaying the answer must not wait on an upload it refused)."""
        sent = 0
        async for chunk in body:
            if self._head is not None:
                return  # answered early: the connection is retired (see `exchange`)
            if not chunk:
                continue
            if self.transport is None:
                raise self._error or UpstreamClosed("the PMS closed the connection", answered=self._messages > 0)
            sent += len(chunk)
            if length is not None and sent > length:
                raise UpstreamClosed("request body longer than declared", answered=False)
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if self._write_paused:
                self._drain = self._loop.create_future()
                timer = self._loop.call_later(self._read_timeout, self._timed_out)  # a PMS that stopped reading
                try:
                    await self._drain
                finally:
                    timer.cancel()
        if self._head is not None:
            return
        if length is not None and sent != length:
            raise UpstreamClosed("request body shorter than declared", answered=False)
        if chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")

    async def read_chunk(self) -> bytes:
        """The next piece of the answer's body; b"" at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered < _LOW_WATER and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._body_waiter = self._loop.create_future()
            timer = self._loop.call_later(self._read_timeout, self._timed_out)
            try:
                await self._body_waiter
            finally:
                timer.cancel()
                self._body_waiter = None

    async def iter_body(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    def reusable(self) -> bool:
        return (
            self._complete and self._framed and not self._carried_body and not self._head_only
            and not self._informational and not self._extra and not self.closed
            and self._error is None and self._keep_alive
        )

    def recycle(self) -> None:
        """Ready for the next request (called by the pool after `reusable()`)."""
        self._busy = False
        self._reset()

    def close(self) -> None:
        self._close()

    # -- internals ---------------------------------------------------------------------------

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _timed_out(self) -> None:
        self._fail(TimeoutError("the PMS did not answer in time"))
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._close()
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._error)
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _chunked_last(value: bytes) -> bool:
    """Whether a Transfer-Encoding value ends in `chunked` (what frames the body; `xchunked`
    or `chunked, gzip` do not, and llhttp then reads the body until the connection closes)."""
    return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


class UpstreamPool:
    """At most `size` connections to one PMS; idle ones kept for the next request."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, size: int,
                 connect_timeout: float, read_timeout: float) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._size = size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[UpstreamConnection] = []
        self._slots = asyncio.Semaphore(size)

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection for one request, and whether it was used before."""
        await self._slots.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection, True
            return await self._open(), False
        except BaseException:
            self._slots.release()
            raise

    async def _open(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: UpstreamConnection(loop, self._read_timeout), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        return protocol

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the pool if its answer provably ended; closed otherwise. Call once."""
        if connection.reusable() and len(self._idle) < self._size:
            connection.recycle()
            self._idle.append(connection)
        else:
            connection.close()
        self._slots.release()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
