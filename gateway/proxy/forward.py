"""Sending a request to the upstream PMS and streaming its answer back.

The upstream client deliberately behaves like no browser: one pooled session with no
cookie jar (one user's cookies must never ride on another's request), no redirect
following, no decompression (bytes pass as the PMS sent them), and URLs passed already
encoded so nothing is re-quoted. Bodies stream both ways; only small bodies of known
length are read whole, which is measurably faster.
"""

from __future__ import annotations

import abc
import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web
from aiohttp.connector import Connection
from multidict import CIMultiDict
from yarl import URL

from gateway.config import LimitsSettings, UpstreamSettings
from gateway.proxy.aiohttp_bodies import RequestBodyTimeout
from gateway.proxy.exchange import Exchange
from gateway.proxy.headers import downstream_response_headers
from gateway.proxy.strict_answers import parse_strictly

log = structlog.get_logger("gateway.proxy")


class _AsSent:
    """aiohttp labels any body without a Content-Type `application/octet-stream`. A PMS
    answer sent without one must reach the browser without one (browsers then sniff it,
    as they did before the gateway stood in between)."""

    untyped = False

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()  # type: ignore[misc]
        if self.untyped:
            self._headers.popall("Content-Type", None)  # type: ignore[attr-defined]


class RelayedResponse(_AsSent, web.Response):
    """A buffered answer relayed as the PMS sent it."""


class RelayedStream(_AsSent, web.StreamResponse):
    """A streamed answer relayed as the PMS sent it."""


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a reason phrase: never relayed


class BodyTooLarge(Exception):
    """The request body exceeded `limits.max_body_size` while streaming."""


class UpstreamUnavailable(Exception):
    """The upstream refused the connection or broke it before answering (502)."""


class UpstreamTimeout(Exception):
    """The upstream did not answer within the configured time (504)."""


class BufferedAnswer(abc.ABC):
    """What the answers of both engines (this one and `gateway.proxy.lean`) do alike over
    their own source of body chunks (`_chunks`): read the body whole up to a limit, let a
    filter replace it, or stream it. Chunks read by a hook that then found the body too
    large are kept, so the answer can still be relayed whole (`stream` sends them first)."""

    __slots__ = ("status", "headers", "_body", "_read")

    def __init__(self, status: int, headers: CIMultiDict[str]) -> None:
        self.status = status
        self.headers = headers
        self._body: bytes | None = None
        self._read: list[bytes] = []

    @abc.abstractmethod
    def _chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks not read yet, from the upstream connection (each engine's own)."""

    async def read_body(self, limit: int) -> bytes:
        if self._body is None:
            chunks, size = self._read, sum(map(len, self._read))
            if size > limit:
                raise BodyTooLarge(f"upstream body larger than {limit} bytes")
            async for chunk in self._chunks():
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    raise BodyTooLarge(f"upstream body larger than {limit} bytes")  # kept: see above
            self._body = b"".join(chunks)
            self._read = []
        return self._body

    def replace_body(self, body: bytes) -> None:
        """Send `body` instead of the upstream's (response filters that rewrite content)."""
        self._body = body
        if "Content-Length" in self.headers:
            self.headers["Content-Length"] = str(len(body))

    @property
    def buffered_body(self) -> bytes | None:
        return self._body

    async def stream(self) -> AsyncIterator[bytes]:
        read, self._read = self._read, []
        for chunk in read:
            yield chunk
        async for chunk in self._chunks():
            yield chunk


class Answer(BufferedAnswer):
    """The upstream's response as response hooks see it (implements UpstreamAnswer).

    `sent` is the browser's answer once its head may have gone out: a failure after that
    (request_timeout striking mid-body) ends that answer, and the gateway's error page must
    never follow it on the connection, where it would be read as body bytes and the rest as
    the next answer."""

    __slots__ = ("_response", "sent")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response.status, downstream_response_headers(response.headers))
        self._response = response
        self.sent: web.StreamResponse | None = None

    @property
    def reason(self) -> str | None:
        return self._response.reason

    def _chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def read_body(self, limit: int) -> bytes:
        if self._body is None:
            length = self._response.content_length
            if length is not None and length <= limit and not self._read:
                self._body = await self._response.read()  # one call instead of a chunk loop
                return self._body
        return await super().read_body(limit)

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        """Drop the upstream connection (its answer was not read to the end)."""
        self._response.close()


class VerbatimRequest(aiohttp.ClientRequest):
    """A client request that adds no headers of its own (no Accept, Accept-Encoding,
    User-Agent): what reaches the PMS is what the browser sent. Also skips the per-request
    sorting and copying aiohttp does for `skip_auto_headers`."""

    DEFAULT_HEADERS: dict[str, str] = {}

    def update_auto_headers(self, skip_auto_headers) -> None:  # type: ignore[override]
        return None

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        """A connection that carries a request body is never reused: a PMS that answers
        without reading the body (a "CL.0" server) would read it as the start of the next
        request, which another user's request completes, and that user would receive the
        answer to the body's author's request. Nor after HEAD: a body the PMS sends anyway
        would be read as the next answer. Marked before the answer is parsed, since aiohttp
        pools a connection as soon as an answer's body ends (see also `strict_answers`)."""
        body = self._body
        carries_body = body is not None and body.size != 0
        if (carries_body or self.method == "HEAD") and conn.protocol is not None:
            conn.protocol.force_close()
        return await super().send(conn)


class Forwarder:
    def __init__(self, upstream: UpstreamSettings, limits: LimitsSettings) -> None:
        self.base = upstream.url
        self.limits = limits
        self._upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ssl_context: ssl.SSLContext | bool = True
        if self.base.startswith("https"):
            if not self._upstream.verify_tls:
                ssl_context = False
            elif self._upstream.ca_file:
                ssl_context = ssl.create_default_context(cafile=str(self._upstream.ca_file))
        connector = aiohttp.TCPConnector(
            limit=self._upstream.pool_size,
            limit_per_host=self._upstream.pool_size,
            ssl=ssl_context,
            enable_cleanup_closed=False,
        )
        parse_strictly(connector)
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            request_class=VerbatimRequest,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self._upstream.connect_timeout,
                sock_read=self._upstream.read_timeout,
            ),
            requote_redirect_url=False,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def url_for(self, ex: Exchange) -> URL:
        target = self.base + ex.path.encoded
        if ex.query:
            target += "?" + ex.query
        return URL(target, encoded=True)

    async def send(self, ex: Exchange) -> Answer:
        """Open the upstream request; the caller streams or reads the answer."""
        assert self.session is not None, "Forwarder.start() was not awaited"
        request = ex.request
        body = await self.request_body(ex)
        started = time.perf_counter()
        try:
            response = await self.session.request(
                request.method,
                self.url_for(ex),
                headers=ex.upstream_headers,
                data=body,
                allow_redirects=False,
                compress=None,
                proxy=None,
            )
        except (BodyTooLarge, RequestBodyTimeout):  # the browser's fault, not the upstream's
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(str(exc) or "timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if ex.bytes_in > self.limits.max_body_size:
                # The client library wraps our generator's BodyTooLarge in its own error.
                raise BodyTooLarge(f"body exceeded {self.limits.max_body_size} bytes") from exc
            raise UpstreamUnavailable(type(exc).__name__) from exc
        if response.status < 200 or _CONTROL.search(response.reason or ""):
            # An upgrade (101) nobody asked for, no status at all, or a reason hiding a line
            # break (aiohttp's parser ends the line at LF only): relayed, the browser's
            # connection could become a tunnel to the PMS, or read a header the PMS did not
            # send as one. WebSockets go through `websocket`.
            response.close()
            raise UpstreamUnavailable(f"answered {response.status} {response.reason!r} to a plain request")
        ex.upstream_seconds = time.perf_counter() - started
        return Answer(response)

    async def request_body(self, ex: Exchange) -> bytes | AsyncIterator[bytes] | None:
        request = ex.request
        if ex.body is not None:
            ex.bytes_in = len(ex.body)
            return ex.body
        if ex.body_cut:  # a guard consumed part of it: never send the rest as if whole
            raise BodyTooLarge("request body larger than a guard could read")
        if not request.body_exists:
            return None
        length = request.content_length
        if length is not None:
            if length > self.limits.max_body_size:
                raise BodyTooLarge(f"declared body of {length} bytes")
            if length <= self.limits.buffer_below:
                data = await request.read()
                ex.bytes_in = len(data)
                return data
        return self._stream_request(ex)

    async def _stream_request(self, ex: Exchange) -> AsyncIterator[bytes]:
        limit = self.limits.max_body_size
        async for chunk in ex.request.content.iter_any():
            ex.bytes_in += len(chunk)
            if ex.bytes_in > limit:
                raise BodyTooLarge(f"body exceeded {limit} bytes")
            yield chunk


    async def relay(self, request: web.BaseRequest, ex: Exchange, answer: Answer) -> web.StreamResponse:
        """Send the upstream's answer to the browser: read whole when small and of known length."""
        headers = answer.headers
        body = answer.buffered_body
        bodiless = request.method == "HEAD" or answer.status in (204, 304)
        if body is None and not bodiless:
            length = headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) <= self.limits.buffer_below:
                body = await answer.read_body(int(length))
        if body is not None and not bodiless:
            # Headers and body in one write: measurably faster than a prepared stream.
            ex.bytes_out = len(body)
            answer.release()
            relayed = RelayedResponse(body=body, status=answer.status, reason=answer.reason, headers=headers)
            relayed.untyped = "Content-Type" not in headers
            return relayed
        response = RelayedStream(status=answer.status, reason=answer.reason, headers=headers)
        response.untyped = "Content-Type" not in headers
        answer.sent = response  # from here on, a failure cuts this answer: see `Answer.sent`
        try:
            await response.prepare(request)
            if not bodiless:
                async for chunk in answer.stream():
                    await response.write(chunk)
                    ex.bytes_out += len(chunk)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            # The browser went away mid-answer (a cancelled page load): not an error of ours.
            ex.reason = "client disconnected"
            answer.close()
            return response
        except Exception as exc:
            # The PMS broke off mid-answer: the browser must see a cut answer, not a whole one.
            log.warning("upstream answer cut", request_id=ex.request_id, error=type(exc).__name__)
            ex.reason = "upstream answer cut"
            _cut(request, answer)
            return response
        except BaseException:
            _cut(request, answer)  # cancelled (request_timeout): see `Answer.sent`
            raise
        answer.release()
        return response


def _cut(request: web.BaseRequest, answer: Answer) -> None:
    """End an answer whose head went out and whose body cannot end whole: the browser's
    connection closes, so nothing written after (aiohttp's closing chunk, an error page)
    reaches it; and the upstream connection, its answer unread, is dropped."""
    answer.close()
    transport = request.transport
    if transport is not None:
        transport.close()
