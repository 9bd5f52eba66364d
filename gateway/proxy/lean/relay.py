"""The head of an upstream's answer as the lean engine writes it to the browser.

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
from typing import Any

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10

from gateway.proxy.exchange import Exchange


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
