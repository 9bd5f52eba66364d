"""The staff-facing protocol of the lean engine.

Requests are parsed by llhttp (httptools) in strict mode, which refuses what request
smuggling needs: Content-Length with Transfer-Encoding, two Content-Lengths, obs-fold,
bare LF, `chunked, chunked`, an unknown transfer coding, whitespace before a colon. On
top of it, the checks aiohttp's parser makes: a singleton header twice (Host,
Content-Length, ...), an HTTP version other than 1.0/1.1, more or larger headers than
`limits` allows, and a deadline for the request head (slowloris). A refusal is a fixed
text that never echoes the request.

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
from http import HTTPStatus
from typing import Any

import httptools
import structlog
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_parser import SINGLETON_HEADERS, RawRequestMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_runner import TCPSite
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import LimitsSettings
from gateway.proxy.exchange import Exchange

log = structlog.get_logger("gateway.proxy")

_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
_VERSIONS = {"1.1": HttpVersion11, "1.0": HttpVersion10}
_DRAIN_LIMIT = 1024 * 1024  # unread request body discarded after an early answer before closing instead
_DRAIN_SECONDS = 2.0
KEEPALIVE_SECONDS = 75.0  # as aiohttp's keepalive_timeout


class Refused(Exception):
    """The request cannot be parsed or breaks a limit: answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class SentResponse(web.StreamResponse):
    """An answer the engine already wrote on the connection (`LeanProtocol.relay`)."""

    def __init__(self, status: int) -> None:
        super().__init__(status=status)
        self._eof_sent = True  # prepare() and write_eof() do nothing


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
        self._timeout_ceil_threshold = 5
        self._http = httptools.HttpRequestParser(self)
        self._messages: deque[tuple[RawRequestMessage, Any] | Refused] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._payload: StreamReader | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._broken = False  # the parser refused: nothing more is read
        self._close_after = False
        self._busy = False
        self._tail = b""  # bytes after an upgrade request, for the WebSocket parser
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
        if self._payload is not None:
            self._payload.set_exception(ConnectionResetError("the browser closed the connection"))
            self._payload = None
        if self._ws_parser is not None:
            self._ws_parser.feed_eof()
        self._close_after = True
        self._wake()

    def eof_received(self) -> bool:
        return True  # half-closed: answers already asked for can still be sent

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
            parser.feed_data(self._tail)
            self._tail = b""

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
            self._tail += data
            return
        try:
            self._http.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            self._tail = data[exc.args[0]:]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            self._refuse(cause if isinstance(cause, Refused) else Refused(400, str(exc)))
        except httptools.HttpParserError as exc:
            self._refuse(Refused(400, str(exc)))

    def on_message_begin(self) -> None:
        self._url = []
        self._url_size = 0
        self._raw_headers = []
        self._header_bytes = 0
        self._cancel_idle()
        if self._head_timer is None:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._url_size += len(url)
        if self._url_size > self._max_line:
            raise Refused(414, "request target too long")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.max_field_size:
            raise Refused(431, "header field too large")
        self._raw_headers.append((name, value))
        if len(self._raw_headers) > self.max_headers:
            raise Refused(431, "too many headers")

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        http = self._http
        version = _VERSIONS.get(http.get_http_version())
        if version is None:
            raise Refused(505, "HTTP version not supported")
        seen: set[bytes] = set()
        headers: CIMultiDict[str] = CIMultiDict()
        chunked = False
        length = None
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered in _SINGLETONS:
                if lowered in seen:
                    raise Refused(400, f"duplicate {name.decode('latin-1')} header")
                seen.add(lowered)
                if lowered == b"transfer-encoding":
                    if value.strip().lower() != b"chunked" or version is HttpVersion10:
                        raise Refused(501 if version is HttpVersion11 else 400, "transfer coding")
                    chunked = True
                elif lowered == b"content-length":
                    length = int(value)
            headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        target = b"".join(self._url).decode("utf-8", "surrogateescape")
        method = http.get_method().decode("ascii")
        url = _url_of(method, target)
        upgrade = http.should_upgrade()
        if chunked or (length is not None and length > 0):
            payload: Any = StreamReader(self, 2**16, loop=self._loop)
            self._payload = payload
        else:
            payload = EMPTY_PAYLOAD
        message = RawRequestMessage(
            method, target, version, CIMultiDictProxy(headers), tuple(self._raw_headers),
            not http.should_keep_alive(), None, upgrade, chunked, url,
        )
        self._messages.append((message, payload))
        if len(self._messages) > 16:  # pipelined far ahead: stop reading until answered
            self._pause_reading_for_buffer()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._payload is not None:
            self._payload.feed_data(body)

    def on_message_complete(self) -> None:
        if self._payload is not None:
            self._payload.feed_eof()
            self._payload = None

    def _refuse(self, refusal: Refused) -> None:
        self._broken = True  # what still arrives is read and dropped: closing on unread bytes would reset the answer
        self._cancel_timers()
        if self._payload is not None:
            # A malformed body (a bare-LF chunk line, an oversize chunk size, framing in a
            # trailer). Still queued, its request is replaced by the refusal, as aiohttp's
            # engine does: nothing of it goes upstream. Already being answered, its handler
            # sees the body fail and the connection closes after that answer.
            queued = self._messages[-1] if self._messages else None
            if isinstance(queued, tuple) and queued[1] is self._payload:
                self._messages.pop()
            self._payload.set_exception(ConnectionResetError("malformed request"))
            self._payload = None
        self._messages.append(refusal)
        self._wake()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._broken:
            self._refuse(Refused(408, "request head not received in time"))

    # -- answering ---------------------------------------------------------------------------

    async def _run(self) -> None:
        """Answer the queued requests in order (pipelining), until the connection ends."""
        server = self._server
        try:
            while True:
                if not self._messages:
                    if self._close_after or self.transport is None:
                        break
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                item = self._messages.popleft()
                if self._buffer_paused and len(self._messages) < 8:
                    self._resume_reading_for_buffer()
                if isinstance(item, Refused):
                    self._write_refusal(item)
                    break
                message, payload = item
                self._busy = True
                keep = await self._answer(server, message, payload)
                self._busy = False
                if not keep or self.transport is None:
                    break
                if not self._messages and self._payload is None:
                    self._arm_idle()
        except asyncio.CancelledError:
            pass
        finally:
            self._busy = False
            if self.transport is not None:
                self.transport.close()

    async def _answer(self, server: LeanServer, message: RawRequestMessage, payload: Any) -> bool:
        writer = StreamWriter(self, self._loop)
        request = server.request_factory(message, payload, self, writer, self._task)
        try:
            response = await server.handler(request)
        except web.HTTPException as exc:
            response = exc
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error", method=message.method)  # no path: it may hold a reset or guest-link secret
            if writer.output_size > 0:
                return False
            response = web.Response(status=500, text="500 Internal Server Error\n")
            response.force_close()
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            return False
        finally:
            request._finish()
        keep = response.keep_alive is not False and not message.should_close and not self._close_after
        if keep and self._upgraded:
            keep = False  # an upgrade the gateway did not accept: the rest is not HTTP/1.1
        if keep and payload is not EMPTY_PAYLOAD and not payload.is_eof():
            keep = await self._drain(payload)
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

    def _write_refusal(self, refusal: Refused) -> None:
        log.info("request refused by the HTTP parser", status=refusal.status, reason=str(refusal), peer=_peer(self.peername))
        if self.transport is None:
            return
        phrase = _phrase(refusal.status)
        body = f"{refusal.status} {phrase}\n".encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (refusal.status, phrase.encode(), len(body), body)
        )

    async def relay(self, request: web.BaseRequest, ex: Exchange, answer: Any, buffer_below: int) -> web.StreamResponse:
        """Write the upstream's answer onto this connection: headers as received (hop-by-hop
        already removed), the body in one write when small and of known length, else as it
        arrives (its own length kept, chunked when unknown, until close for HTTP/1.0)."""
        headers = answer.headers
        status = answer.status
        bodiless = request.method == "HEAD" or status in (204, 304)
        body = answer.buffered_body
        length_header = headers.get("Content-Length")
        if body is None and not bodiless and length_header is not None and length_header.isdigit():
            if int(length_header) <= buffer_below:
                body = await answer.read_body(int(length_header))
        closing = not request.keep_alive or self._close_after  # HTTP/1.0 asked for keep-alive when it is True
        reason = answer.raw_reason or _phrase(status).encode()
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        if body is not None and not bodiless:
            headers["Content-Length"] = str(len(body))
            framing = "length"
        elif bodiless:
            framing = "none"
        elif length_header is not None and length_header.isdigit():
            framing = "length"
        elif request.version is HttpVersion10:
            framing, closing = "close", True
        else:
            framing = "chunked"
            headers.popall("Content-Length", None)
            headers["Transfer-Encoding"] = "chunked"
        if closing:
            headers["Connection"] = "close"
            self._close_after = True
        elif request.version is HttpVersion10:
            headers["Connection"] = "keep-alive"  # as aiohttp: an HTTP/1.0 client closes unless told
        if "X-Request-Id" not in headers:
            headers["X-Request-Id"] = ex.request_id
        if "Date" not in headers:  # what aiohttp's StreamResponse adds to every answer
            headers["Date"] = rfc822_formatted_time()
        headers.setdefault("Server", SERVER_SOFTWARE)
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        lines.append(b"\r\n")
        transport = self.transport
        if transport is None:
            answer.close()
            ex.reason = "client disconnected"
            return SentResponse(status)
        if body is not None and not bodiless:
            lines.append(body)
            transport.write(b"".join(lines))
            ex.bytes_out = len(body)
            answer.release()
            return SentResponse(status)
        transport.write(b"".join(lines))
        if bodiless:
            answer.release()
            return SentResponse(status)
        chunked = framing == "chunked"
        try:
            async for chunk in answer.stream():
                if self.transport is None:
                    ex.reason = "client disconnected"
                    answer.close()
                    return SentResponse(status)
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                ex.bytes_out += len(chunk)
                if self._paused:
                    await self._drain_helper()
        except (ConnectionError, TimeoutError, OSError, Exception) as exc:
            # The PMS broke off mid-answer: the browser must see a cut answer, not a whole one.
            log.warning("upstream answer cut", request_id=ex.request_id, error=type(exc).__name__)
            ex.reason = "upstream answer cut"
            answer.close()
            self._close_after = True
            self.abort()
            return SentResponse(status)
        if chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        answer.release()
        return SentResponse(status)

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


def _url_of(method: str, target: str) -> URL:
    """The request URL as aiohttp builds it (origin-form split by hand, the rest by yarl)."""
    try:
        if target.startswith("/"):
            path, _, fragment = target.partition("#")
            path, _, query = path.partition("?")
            return URL.build(path=path, query_string=query, fragment=fragment, encoded=True)
        if method == "CONNECT":
            return URL.build(authority=target, encoded=True)
        url = URL(target, encoded=True)
    except ValueError as exc:
        raise Refused(400, "invalid request target") from exc
    if target != "*" and url.raw_host is None:
        raise Refused(400, "invalid request target")
    return url


def _peer(peername: Any) -> str | None:
    return peername[0] if isinstance(peername, tuple) else None


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"


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
