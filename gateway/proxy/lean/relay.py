"""An upstream's answer written straight onto the browser's connection by the lean engine.

Once its head is written the answer is its request's only one: if it cannot end whole (the
PMS broke off, a timeout struck, it would run past its length), the connection is cut,
never answered again. The body goes in one write when small and of known length, else as
it arrives, the PMS socket read no faster than the browser takes it.

Framing is the engine's own, never the PMS's: the body's length when it is known (read
whole, or the PMS's Content-Length, which llhttp holds the body to), chunked when it is
not, until close for an HTTP/1.0 browser; no body and no Content-Length for 204 (RFC 9110:
a 204 has none, and a proxy in front of the gateway could wait for one). Hop-by-hop
headers are already gone (`downstream_response_headers`). Header values come from
llhttp, which refuses CR, LF and NUL in them, or from addons: a value that would break the
line is refused here, so no header can be injected into the answer.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10

from gateway.proxy.exchange import Exchange

if TYPE_CHECKING:
    from gateway.proxy.lean.server import LeanProtocol

log = structlog.get_logger("gateway.proxy")


class Framing:
    LENGTH, CHUNKED, CLOSE, NONE = "length", "chunked", "close", "none"


def answer_head(request: web.BaseRequest, ex: Exchange, answer: Any, body: bytes | None,
                *, closing: bool) -> tuple[bytes, str, bool]:
    """The status line and headers, how the body is framed, and whether the connection
    closes after it (`closing` asked by the browser or the engine)."""
    headers = answer.headers
    status = answer.status
    length = headers.get("Content-Length")
    if request.method == "HEAD" or status in (204, 304):
        framing = Framing.NONE  # HEAD and 304 keep the length the PMS gave: it describes the entity
        if status == 204:
            headers.popall("Content-Length", None)
    elif body is not None:
        headers["Content-Length"] = str(len(body))
        framing = Framing.LENGTH
    elif length is not None and length.isdigit():
        framing = Framing.LENGTH
    elif request.version is HttpVersion10:
        framing, closing = Framing.CLOSE, True
    else:
        framing = Framing.CHUNKED
        headers.popall("Content-Length", None)
        headers["Transfer-Encoding"] = "chunked"
    if closing:
        headers["Connection"] = "close"
    elif request.version is HttpVersion10:
        headers["Connection"] = "keep-alive"  # as aiohttp: an HTTP/1.0 client closes unless told
    if "X-Request-Id" not in headers:
        headers["X-Request-Id"] = ex.request_id
    if "Date" not in headers:  # what aiohttp's StreamResponse adds to every answer
        headers["Date"] = rfc822_formatted_time()
    headers.setdefault("Server", SERVER_SOFTWARE)
    reason = answer.raw_reason or phrase(status).encode()
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise ValueError("a header of the answer holds a line break")  # an addon's value: never sent
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, text.encode("utf-8", "surrogateescape")), framing, closing


def phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"


class SentResponse(web.StreamResponse):
    """An answer already written on the connection (`relay`)."""

    def __init__(self, status: int) -> None:
        super().__init__(status=status)
        self._eof_sent = True  # prepare() and write_eof() do nothing


async def relay(connection: LeanProtocol, request: web.BaseRequest, ex: Exchange, answer: Any,
                buffer_below: int) -> web.StreamResponse:
    status = answer.status
    body = answer.buffered_body
    length = answer.headers.get("Content-Length")
    bodiless = request.method == "HEAD" or status in (204, 304)
    if body is None and not bodiless and length is not None and length.isdigit() and int(length) <= buffer_below:
        body = await answer.read_body(int(length))
    head, framing, closing = answer_head(request, ex, answer, None if bodiless else body,
                                         closing=not request.keep_alive or connection.closing)
    if framing != Framing.NONE and body is not None:
        head += body
        ex.bytes_out = len(body)
    if not connection.start_answer(head, closing=closing):
        answer.close()
        ex.reason = "client disconnected"
        return SentResponse(status)
    if framing == Framing.NONE or body is not None:
        answer.release()
        return SentResponse(status)
    chunked = framing == Framing.CHUNKED
    # The length the browser was told (llhttp holds the PMS to it; a hook could have
    # changed the header): never a byte more, and anything less is a cut answer.
    declared = int(length) if framing == Framing.LENGTH and length is not None else None
    try:
        async for chunk in answer.stream():
            if declared is not None and ex.bytes_out + len(chunk) > declared:
                raise ValueError("answer longer than its Content-Length")
            if not connection.write_body(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk):
                ex.reason = "client disconnected"
                answer.close()
                return SentResponse(status)
            ex.bytes_out += len(chunk)
            await connection.drained()
        if declared is not None and ex.bytes_out != declared:
            raise ValueError("answer shorter than its Content-Length")
    except Exception as exc:
        # The PMS broke off mid-answer: the browser must see a cut answer, not a whole one.
        log.warning("upstream answer cut", request_id=ex.request_id, error=type(exc).__name__)
        ex.reason = "upstream answer cut"
        answer.close()
        connection.cut()
        return SentResponse(status)
    except BaseException:
        answer.close()
        connection.cut()  # cancelled (request_timeout): the handler's next answer is never written
        raise
    if chunked:
        connection.write_body(b"0\r\n\r\n")
    answer.release()
    return SentResponse(status)
