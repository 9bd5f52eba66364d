"""The staff-facing protocol of the lean engine.

Requests are parsed by llhttp (httptools) in strict mode and checked as aiohttp's parser
checks them (`request_head`); here, more or larger headers than `limits` allows, and a
deadline for the request head (slowloris) and for its body (`request_timeout`). A refusal
is a fixed text that never echoes the request, closed without resetting it away.

Memory per connection is bounded whatever the browser sends: a header field still being
received (httptools accumulates it before handing it over) is cut at the field limit,
pipelined requests are queued up to a count and a size, bytes after an upgrade request up
to a size, and the engine stops reading while its answers are not being read.

Each answer is written once: after the engine started writing an upstream's answer,
nothing else is ever written for that request (a timeout then aborts the connection), and
the upstream connection of a request is always given back, however the request ended.

Each request becomes a real `aiohttp.web.Request` handed to the gateway's aiohttp
application (`app._handle`: router, middlewares, addons, the gateway's own pages,
WebSockets through `set_parser`), so features see exactly what they see on the aiohttp
engine. What the engine saves is aiohttp's per-connection machinery and, through
`relay`, the response object of every forwarded answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import structlog
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_runner import TCPSite

from gateway.config import LimitsSettings
from gateway.proxy.lean.relay import phrase
from gateway.proxy.lean.request_head import Refused, request_head

log = structlog.get_logger("gateway.proxy")

_DRAIN_LIMIT = 1024 * 1024  # unread request body discarded after an early answer before closing instead
_DRAIN_SECONDS = 2.0
KEEPALIVE_SECONDS = 75.0  # as aiohttp's keepalive_timeout
SEND_STALL_SECONDS = 75.0  # a browser that reads none of its answers for this long is dropped
_QUEUE_DEPTH, _RESUME_DEPTH = 16, 8  # pipelined requests parsed ahead of their answers
_QUEUE_BYTES = 1024 * 1024  # ... and the size of their heads
_TAIL_LIMIT = 64 * 1024  # bytes read after an upgrade request before the gateway answered it
_FIELD_SLACK = 256  # separators and whitespace around a header field's name and value
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_SECONDS = 5.0  # after a refusal, how long what the browser still sends is read and dropped


class ContinueReader(StreamReader):
    """The body of a request sent with `Expect: 100-continue`. The 100 goes out when a
    handler first waits for the body, so only once the guards let the request through (as
    nginx does): a refused request never invites its upload."""

    __slots__ = ()

    async def _wait(self, func_name: str) -> None:
        protocol = self._protocol
        if isinstance(protocol, LeanProtocol):
            protocol.send_continue(self)
        await super()._wait(func_name)


class LeanServer:
    """What the connections of one listener share: the application and the limits."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 request_factory: Callable[..., web.BaseRequest], limits: LimitsSettings) -> None:
        self.handler = handler
        self.request_factory = request_factory
        self.limits = limits
        self.connections: set[LeanProtocol] = set()

    def __call__(self) -> LeanProtocol:
        return LeanProtocol(self)

    async def shutdown(self, timeout: float = 2.0) -> None:
        """Close idle connections now, and the busy ones after `timeout`."""
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()


class LeanProtocol(BaseProtocol):
    """One browser connection: parse, queue (pipelining), answer in order, keep alive."""

    def __init__(self, server: LeanServer) -> None:
        super().__init__(asyncio.get_running_loop())
        self._server = server
        limits = server.limits
        self.max_field_size = limits.max_header_size
        self.max_headers = limits.max_headers
        self._max_line = limits.max_header_size
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.request_timeout
        self._max_unparsed = limits.max_header_size + _FIELD_SLACK
        self._timeout_ceil_threshold = 5
        self._http = httptools.HttpRequestParser(self)
        self._messages: deque[tuple[RawRequestMessage, Any, int] | Refused] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._payload: StreamReader | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._in_body = False  # between a head and the end of its body: fields are trailers
        self._trailers = 0
        self._unparsed = 0  # bytes fed since httptools last handed something over
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        # The request being answered: its body, whether a 100 is still owed, what holds an
        # upstream connection, and whether an upstream's answer was started on the wire.
        self._answering: Any = None
        self._expecting: StreamReader | None = None
        self._writer: StreamWriter | None = None
        self._held: list[Any] = []
        self._relayed = False
        self._broken = False  # the parser refused: nothing more is read
        self._unread = False  # an answered request's body was left unread: the connection closes
        self._close_after = False
        self._ended = False  # the browser's end arrived: close once the queued requests are answered
        self._busy = False
        self._tail = bytearray()  # bytes after an upgrade request, for the WebSocket parser
        self._ws_parser: Any = None
        self._ws_callback: Callable[[], None] | None = None
        self.ssl_context = None
        self.peername = None
        self.sockname = None

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ssl_context = transport.get_extra_info("sslcontext")
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self._server.connections.add(self)
        self._task = self._loop.create_task(self._run())
        self._arm_idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._payload is not None:
            self._payload.set_exception(ConnectionResetError("the browser closed the connection"))
            self._payload = None
        if self._ws_parser is not None:
            self._ws_parser.feed_eof()
        self._close_after = True
        self._wake()

    def eof_received(self) -> bool:
        """Half-closed: the answers already asked for (a refusal too) are still sent, then
        the connection closes (nothing more can come); after a refusal went out
        (`_linger`), the browser's end ends the connection at once."""
        self._ended = True
        if self._ws_parser is not None:
            self._ws_parser.feed_eof()  # a WebSocket whose browser stopped sending: it ends
        elif self._payload is not None and not self._broken:
            self._refuse(Refused(400, "request body cut short"))  # it can no longer arrive whole
        self._wake()
        return self._linger_timer is None

    def pause_reading(self) -> None:  # a request body's StreamReader is full
        self._reading_paused = True
        self._pause_transport_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if not self._buffer_paused:
            self._resume_transport_reading()

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        """After a WebSocket handshake: the rest of the connection is that parser's."""
        self._ws_parser = parser
        self._ws_callback = data_received_cb
        self._upgraded = True
        if self._tail:
            tail, self._tail = bytes(self._tail), bytearray()
            parser.feed_data(tail)
        if self._buffer_paused:
            self._resume_reading_for_buffer()

    def keep_alive(self, value: bool) -> None:
        if not value:
            self._close_after = True

    def close_when_idle(self) -> None:
        self._close_after = True
        if not self._busy and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._ws_parser is not None:
            self._ws_parser.feed_data(data)
            if self._ws_callback is not None:
                self._ws_callback()
            return
        if self._broken:
            return
        if self._upgraded:  # an upgrade request is pending: what follows is not HTTP/1.1
            self._keep_tail(data)
            return
        self._unparsed += len(data)
        try:
            self._http.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            self._keep_tail(data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            self._refuse(cause if isinstance(cause, Refused) else Refused(400, str(exc)))
            return
        except httptools.HttpParserError as exc:
            self._refuse(Refused(400, str(exc)))
            return
        if self._unparsed > self._max_unparsed:
            # httptools keeps a header field (or a trailer) in memory until it ends, each
            # piece appended to the last: one without end would fill memory and the CPU.
            # Every callback resets the count, so what is counted is one unfinished field.
            self._refuse(Refused(431, "header field too large"))

    def _keep_tail(self, data: bytes) -> None:
        """Bytes after an upgrade request are kept for the WebSocket parser, up to a bound:
        beyond it, reading stops until the gateway has answered the upgrade."""
        self._tail += data
        if len(self._tail) > _TAIL_LIMIT and not self._buffer_paused:
            self._pause_reading_for_buffer()

    def on_message_begin(self) -> None:
        self._unparsed = 0
        self._url = []
        self._url_size = 0
        self._raw_headers = []
        self._in_body = False
        self._trailers = 0
        self._cancel_idle()
        if self._head_timer is None:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._unparsed = 0
        self._url_size += len(url)
        if self._url_size > self._max_line:
            raise Refused(414, "request target too long")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._unparsed = 0
        if len(name) + len(value) > self.max_field_size:
            raise Refused(431, "header field too large")
        if self._in_body:  # a trailer: read and dropped (aiohttp's engine drops them too)
            self._trailers += 1
            if self._trailers > self.max_headers:
                raise Refused(431, "too many trailer fields")
            return
        self._raw_headers.append((name, value))
        if len(self._raw_headers) > self.max_headers:
            raise Refused(431, "too many headers")

    def on_headers_complete(self) -> None:
        self._unparsed = 0
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        head = request_head(self._http, self._url, self._raw_headers)
        if head.has_body:
            payload: Any = (ContinueReader if head.expect_continue else StreamReader)(self, 2**16, loop=self._loop)
            self._payload = payload
            self._body_timer = self._loop.call_later(self._body_timeout, self._body_too_slow, payload)
        else:
            payload = EMPTY_PAYLOAD
        message, size = head.message, head.size
        self._messages.append((message, payload, size))
        self._queued_bytes += size
        if len(self._messages) > _QUEUE_DEPTH or self._queued_bytes > _QUEUE_BYTES:
            self._pause_reading_for_buffer()  # pipelined far ahead: stop reading until answered
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        if self._payload is not None:
            self._payload.feed_data(body)

    def on_chunk_header(self) -> None:
        self._unparsed = 0

    def on_chunk_complete(self) -> None:
        self._unparsed = 0

    def on_message_complete(self) -> None:
        self._unparsed = 0
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._payload is not None:
            self._payload.feed_eof()
            self._payload = None

    def _refuse(self, refusal: Refused) -> None:
        """Nothing more is parsed on this connection; `refusal` is the answer to the request
        whose bytes broke a rule. A request still queued is replaced by it, as aiohttp's
        engine does (nothing of it goes upstream); one whose body a handler is waiting for
        gets it now unless its answer has begun, and its handler is cancelled."""
        self._broken = True  # what still arrives is read and dropped (see `_linger`)
        self._cancel_timers()
        payload, self._payload = self._payload, None
        if payload is not None:
            payload.set_exception(ConnectionResetError(str(refusal)))
            if payload is self._answering:
                self._write_refusal(refusal, answer=not self._answer_started())
                if self._task is not None:
                    self._task.cancel()
                return
            queued = self._messages[-1] if self._messages else None
            if isinstance(queued, tuple) and queued[1] is payload:
                self._messages.pop()
                self._queued_bytes -= queued[2]
        self._messages.append(refusal)
        self._wake()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._broken:
            self._refuse(Refused(408, "request head not received in time"))

    def _body_too_slow(self, payload: StreamReader) -> None:
        """The body did not arrive whole within `request_timeout` of its head (slowloris on
        bodies: a guard reading a login form waits on it outside the forward's timeout)."""
        self._body_timer = None
        if payload is self._payload and not self._broken:
            self._refuse(Refused(408, "request body not received in time"))

    def _linger(self) -> None:
        """Close after a refusal, or an answer whose request body was not read whole, without
        resetting it away: closing a socket with unread bytes sends RST, which can destroy
        the answer before the browser reads it. The write side is shut, what arrives is read
        and dropped, and the close follows the browser's or `_LINGER_SECONDS`, as nginx's
        lingering close does."""
        self._broken = True  # nothing more is parsed
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():  # TLS
            transport.close()
            return
        transport.write_eof()
        self._reading_paused = self._buffer_paused = False
        self._resume_transport_reading()
        self._linger_timer = self._loop.call_later(_LINGER_SECONDS, transport.abort)

    # -- answering ---------------------------------------------------------------------------

    async def _run(self) -> None:
        """Answer the queued requests in order (pipelining), until the connection ends."""
        server = self._server
        try:
            while True:
                if not self._messages:
                    if self._close_after or self._ended or self.transport is None:
                        break
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                item = self._messages.popleft()
                if isinstance(item, Refused):
                    self._write_refusal(item)
                    break
                message, payload, size = item
                self._queued_bytes -= size
                if self._buffer_paused and not self._upgraded and len(self._messages) < _RESUME_DEPTH \
                        and self._queued_bytes < _QUEUE_BYTES // 2:
                    self._resume_reading_for_buffer()
                self._busy = True
                keep = await self._answer(server, message, payload)
                self._busy = False
                if not keep or self.transport is None:
                    break
                if self._paused:
                    # The browser is not reading its answers: answer no more (and, the queue
                    # filling up, read no more) until it does, or drop it.
                    try:
                        async with asyncio.timeout(SEND_STALL_SECONDS):
                            await self._drain_helper()
                    except TimeoutError:
                        log.info("browser reads no answers: connection dropped", peer=_peer(self.peername))
                        self.abort()
                        break
                if not self._messages and self._payload is None:
                    self._arm_idle()
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self._busy = False
            if self._broken or self._unread:
                self._linger()
            elif self.transport is not None:
                self.transport.close()

    async def _answer(self, server: LeanServer, message: RawRequestMessage, payload: Any) -> bool:
        writer = StreamWriter(self, self._loop)
        request = server.request_factory(message, payload, self, writer, self._task)
        self._answering, self._writer, self._relayed = payload, writer, False
        self._expecting = payload if isinstance(payload, ContinueReader) else None
        try:
            try:
                response = await server.handler(request)
            except web.HTTPException as exc:
                response = exc
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unhandled error", method=message.method)  # no path: it may hold a reset or guest-link secret
                if self._answer_started():
                    self.abort()
                    return False
                response = web.Response(status=500, text="500 Internal Server Error\n")
                response.force_close()
            if self._answer_started() and not response.prepared:
                # An answer was cut on the wire (request_timeout struck while an upstream's
                # answer streamed, or a WebSocket was open) and the handler answered again:
                # a second answer must never follow the first, where it would be read as
                # the first one's body (or frames).
                self.abort()
                return False
            if self._expecting is not None and not payload.is_eof():
                # Answered without the 100 the browser waits for: whether its body follows
                # is unknown, so nothing after this answer can be read as a request.
                response.force_close()
            self._expecting = None
            try:
                await response.prepare(request)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                return False
            finally:
                request._finish()
        finally:
            self._answering, self._writer, self._expecting = None, None, None
            held, self._held = self._held, []
            for answer in held:
                answer.close()  # a no-op when relayed; else its upstream connection is retired and freed
        keep = response.keep_alive is not False and not message.should_close and not self._close_after
        if keep and self._upgraded:
            keep = False  # an upgrade the gateway did not accept: the rest is not HTTP/1.1
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            keep = keep and await self._drain(payload)
            self._unread = not keep  # closing on unread bytes would reset the answer away: `_linger`
        return keep

    async def _drain(self, payload: StreamReader) -> bool:
        """An answer went out before its request body was read (a refusal): discard the rest,
        bounded, so the next request on the connection starts where this one ends."""
        discarded = 0
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                while discarded <= _DRAIN_LIMIT:
                    chunk = await payload.readany()
                    if not chunk:
                        return payload.is_eof()
                    discarded += len(chunk)
        except (TimeoutError, ConnectionError, Exception):
            return False
        return False

    # -- what the request being answered owes -------------------------------------------------

    def hold(self, answer: Any) -> None:
        """An upstream answer of the request being answered: closed when the request ends
        if nobody released it (an error, a timeout, a hook that raised): a pool slot must
        never leak, nor a half-read connection go back to the pool."""
        self._held.append(answer)

    def send_continue(self, payload: StreamReader) -> None:
        """`ContinueReader`: the handler of this request waits for its body."""
        if payload is self._expecting:
            self._expecting = None
            if self.transport is not None and not self._answer_started():
                self.transport.write(_CONTINUE)

    def _answer_started(self) -> bool:
        writer = self._writer
        return self._relayed or (writer is not None and writer.output_size > 0)

    def _write_refusal(self, refusal: Refused, *, answer: bool = True) -> None:
        log.info("request refused by the HTTP parser", status=refusal.status, reason=str(refusal),
                 peer=_peer(self.peername))
        if self.transport is None or not answer:
            return
        text = phrase(refusal.status)
        body = f"{refusal.status} {text}\n".encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (refusal.status, text.encode(), len(body), body)
        )

    # -- what `relay` writes an upstream's answer with ------------------------------------------

    @property
    def closing(self) -> bool:
        """The connection closes after the answer being written."""
        return self._close_after

    def start_answer(self, head: bytes, *, closing: bool) -> bool:
        """Write the head of an upstream's answer: from here on it is this request's only
        answer (`_answer` writes no other). False when the browser is gone."""
        self._close_after = self._close_after or closing
        if self.transport is None:
            return False
        self._relayed = True
        self.transport.write(head)
        return True

    def write_body(self, data: bytes) -> bool:
        if self.transport is None:
            return False
        self.transport.write(data)
        return True

    async def drained(self) -> None:
        if self._paused:
            await self._drain_helper()

    def cut(self) -> None:
        """The answer cannot end whole: the browser must see it cut, never completed by
        whatever would come next on the connection."""
        self._close_after = True
        self.abort()

    # -- timers ------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm_idle(self) -> None:
        self._cancel_idle()
        self._idle_timer = self._loop.call_later(KEEPALIVE_SECONDS, self._idle_expired)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self._busy and not self._messages and self.transport is not None:
            self.transport.close()

    def _cancel_timers(self) -> None:
        self._cancel_idle()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def _peer(peername: Any) -> str | None:
    return peername[0] if isinstance(peername, tuple) else None


class LeanSite(TCPSite):
    """An aiohttp site whose connections are `LeanProtocol`s over the runner's application:
    registered in the runner like a `TCPSite`, so `runner.cleanup()` stops it first."""

    __slots__ = ("_lean",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limits: LimitsSettings,
                 ssl_context: Any = None, reuse_port: bool | None = None, backlog: int = 1024) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port, backlog=backlog)
        server = runner.server
        assert server is not None
        self._lean = LeanServer(server.request_handler, server.request_factory, limits)

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._lean, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._lean.shutdown()
        self._runner._unreg_site(self)
