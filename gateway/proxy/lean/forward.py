"""The forwarder of the lean engine: the same contract as `gateway.proxy.forward.Forwarder`
(same errors, same `UpstreamAnswer` for response hooks, WebSockets still bridged by the
aiohttp client) over `UpstreamPool`, and answers written straight onto the browser's
connection when it is a `LeanProtocol`, which also holds each answer until its request
ends: an answer nobody released (a hook raised, a timeout struck) still frees its pool slot.

Only a request that cannot have been acted on is sent twice: an idempotent one without a
streamed body, on a kept connection the PMS closed before answering anything.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import LimitsSettings, UpstreamSettings
from gateway.proxy.exchange import Exchange
from gateway.proxy.forward import BodyTooLarge, BufferedAnswer, Forwarder, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.headers import downstream_response_headers
from gateway.proxy.lean.relay import relay
from gateway.proxy.lean.server import LeanProtocol
from gateway.proxy.lean.upstream import Head, UpstreamClosed, UpstreamConnection, UpstreamPool

_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})  # safe to send again on a fresh connection
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class LeanAnswer(BufferedAnswer):
    """The upstream's answer as response hooks see it (implements UpstreamAnswer)."""

    __slots__ = ("_pool", "_connection", "_reason", "_released")

    def __init__(self, pool: UpstreamPool, connection: UpstreamConnection, head: Head) -> None:
        raw = CIMultiDict((_decode(n), _decode(v)) for n, v in head.raw_headers)
        super().__init__(head.status, downstream_response_headers(raw))  # type: ignore[arg-type]
        self._pool = pool
        self._connection = connection
        self._reason = head.reason
        self._released = False

    @property
    def reason(self) -> str | None:
        return _decode(self._reason) or None

    @property
    def raw_reason(self) -> bytes:
        return self._reason

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self._connection.read_chunk():
            yield chunk

    def release(self) -> None:
        """Done with the answer: the connection goes back only if the answer ended cleanly."""
        if not self._released:
            self._released = True
            self._pool.release(self._connection)

    def close(self) -> None:
        if not self._released:
            self._connection.close()
            self.release()


class LeanForwarder(Forwarder):
    """`Forwarder` over the lean pool; its aiohttp session remains for WebSockets only."""

    def __init__(self, upstream: UpstreamSettings, limits: LimitsSettings) -> None:
        super().__init__(upstream, limits)
        parts = urlsplit(upstream.url)
        self._prefix = parts.path.rstrip("/")
        self._host = parts.netloc
        self._pool: UpstreamPool | None = None

    async def start(self) -> None:
        await super().start()
        parts = urlsplit(self.base)
        context = None
        if parts.scheme == "https":
            if not self._upstream.verify_tls:
                context = _unverified()
            else:
                import ssl

                context = ssl.create_default_context(cafile=str(self._upstream.ca_file) if self._upstream.ca_file else None)
        self._pool = UpstreamPool(
            parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80),
            ssl_context=context, size=self._upstream.pool_size,
            connect_timeout=self._upstream.connect_timeout, read_timeout=self._upstream.read_timeout,
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await super().close()

    def _head(self, method: str, ex: Exchange, body: bytes | AsyncIterator[bytes] | None) -> tuple[bytes, bool, int | None]:
        """The request head to send up, whether the body goes chunked, and its length."""
        target = self._prefix + ex.path.encoded + ("?" + ex.query if ex.query else "")
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        host_seen = False
        declared: str | None = None
        for name, value in ex.upstream_headers.items():
            lowered = name.lower()
            if lowered in _FRAMING:
                if lowered == "content-length":
                    declared = value
                continue
            host_seen = host_seen or lowered == "host"
            lines.append(f"{name}: {value}\r\n")
        if not host_seen:
            lines.append(f"Host: {self._host}\r\n")
        chunked, length = False, None
        if isinstance(body, bytes):
            length = len(body)
        elif body is not None:
            length = ex.request.content_length
            chunked = length is None
        elif declared is not None:
            length = int(declared)
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        if text.count("\n") != len(lines) or "\r\r" in text or "\x00" in text:
            raise ValueError("a header to send up holds a line break")  # an addon's value, never the browser's
        return text.encode("utf-8", "surrogateescape"), chunked, length

    async def send(self, ex: Exchange) -> LeanAnswer:  # type: ignore[override]
        assert self._pool is not None, "LeanForwarder.start() was not awaited"
        method = ex.request.method
        body = await self.request_body(ex)
        head, chunked, length = self._head(method, ex, body)
        started = time.perf_counter()
        retry = method in _RETRYABLE and not (body is not None and not isinstance(body, bytes))
        while True:
            try:
                connection, reused = await self._pool.acquire()
            except TimeoutError as exc:
                raise UpstreamTimeout("connect timeout") from exc
            except OSError as exc:
                raise UpstreamUnavailable(type(exc).__name__) from exc
            try:
                answer_head = await connection.exchange(head, body, chunked=chunked, length=length,
                                                         head_only=method == "HEAD")
            except BaseException as exc:
                connection.close()
                self._pool.release(connection)
                if isinstance(exc, UpstreamClosed) and reused and retry and not exc.answered:
                    retry = False  # a kept connection the PMS had just closed: once more, fresh
                    continue
                if isinstance(exc, BodyTooLarge) or not isinstance(exc, Exception):
                    raise
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout(str(exc)) from exc
                if isinstance(exc, (UpstreamClosed, OSError, httptools.HttpParserError, ValueError)):
                    raise UpstreamUnavailable(type(exc).__name__) from exc
                raise
            break
        ex.upstream_seconds = time.perf_counter() - started
        answer = LeanAnswer(self._pool, connection, answer_head)
        protocol = ex.request.protocol
        if isinstance(protocol, LeanProtocol):
            protocol.hold(answer)  # given back when the request ends, whatever happens to the answer
        return answer

    async def relay(self, request: web.BaseRequest, ex: Exchange, answer) -> web.StreamResponse:  # type: ignore[override]
        protocol = request.protocol
        if isinstance(protocol, LeanProtocol) and isinstance(answer, LeanAnswer):
            return await relay(protocol, request, ex, answer, self.limits.buffer_below)
        return await super().relay(request, ex, answer)


def _unverified():
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
