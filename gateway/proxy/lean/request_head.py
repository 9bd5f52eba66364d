"""A request head as llhttp parsed it, checked and turned into aiohttp's `RawRequestMessage`.

llhttp in strict mode already refuses what request smuggling needs (Content-Length with
Transfer-Encoding, two Content-Lengths, obs-fold, bare CR or LF, an unknown transfer
coding, whitespace before a colon). Added here, the checks aiohttp's parser makes: a
singleton header twice (Host, Content-Length, ...), an HTTP version other than 1.0/1.1,
chunked on HTTP/1.0; and one llhttp leaves to its user: an upgrade request carrying a body.
`Expect: 100-continue` is taken out of the headers: the engine answers it itself, once a
handler reads the body (`server.ContinueReader`); any other expectation gets 417.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_parser import SINGLETON_HEADERS, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
_VERSIONS = {"1.1": HttpVersion11, "1.0": HttpVersion10}


class Refused(Exception):
    """The request cannot be parsed or breaks a limit: answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class RequestHead(NamedTuple):
    message: RawRequestMessage
    has_body: bool
    expect_continue: bool
    size: int  # bytes of target and header fields: what a queued request holds in memory


def request_head(http: Any, target_parts: list[bytes], raw_headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """`http` is the llhttp parser just after the head; raises `Refused`."""
    version = _VERSIONS.get(http.get_http_version())
    if version is None:
        raise Refused(505, "HTTP version not supported")
    seen: set[bytes] = set()
    headers: CIMultiDict[str] = CIMultiDict()
    chunked, length, expect_continue = False, None, False
    size = sum(map(len, target_parts))
    for name, value in raw_headers:
        size += len(name) + len(value)
        lowered = name.lower()
        if lowered == b"expect" and version is HttpVersion11:
            if value.strip().lower() != b"100-continue":
                raise Refused(417, "unknown expectation")  # aiohttp's 417 echoed the value
            expect_continue = True
            continue
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
    target = b"".join(target_parts).decode("utf-8", "surrogateescape")
    method = http.get_method().decode("ascii")
    upgrade = http.should_upgrade()
    if upgrade and (chunked or length):
        # llhttp reads no body after an upgrade request: what follows is the new protocol.
        # Sent anyway (curl's h2c POST), the body would be lost or, declared upstream and
        # never sent, make the PMS read the next request as it.
        raise Refused(400, "upgrade request with a body")
    message = RawRequestMessage(
        method, target, version, CIMultiDictProxy(headers), tuple(raw_headers),
        not http.should_keep_alive(), None, upgrade, chunked, _url_of(method, target),
    )
    return RequestHead(message, chunked or bool(length), expect_continue, size)


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
