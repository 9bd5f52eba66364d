"""PMS answers parsed strictly on the aiohttp engine, as llhttp does on the lean engine.

aiohttp's client parses answers leniently outside its debug mode: an obs-folded line, a
bare LF or a control character inside a header is accepted, and a bare LF even splits
one header into two (`X-A: a\\nSet-Cookie: evil=1` planted a cookie on the browser). A
hostile or broken PMS must get a 502, never a relayed header it did not send as one.
The strict mode of aiohttp's own (pure Python) answer parser refuses these; the upstream
connector builds its connections with it. The parser also keeps a connection out of the
pool after an answer that may not have ended where the next begins (see `parse_message`).
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import DEFAULT_CHUNK_SIZE, BaseTimerContext
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import HttpResponseParserPy, RawResponseMessage


class StrictAnswerParser(HttpResponseParserPy):
    """aiohttp's answer parser as its debug mode sets it: lax mode off, and lines end at
    CRLF only (outside debug mode a bare LF ends a line too)."""

    lax = False
    _answered = False  # a final answer was parsed (set on the instance)

    def feed_data(self, data: bytes, SEP: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().feed_data(data, b"\r\n", *args, **kwargs)

    def parse_message(self, lines: list[bytes]) -> RawResponseMessage:
        """One final answer per request (each request gets a parser of its own): a second
        one is an answer nobody asked for, a broken PMS's late write on a connection already
        back in the pool, which aiohttp would queue as the next user's answer. It is refused,
        which closes the connection.

        After a 1xx (or no status), a 204 or a 304 the connection is never reused: a body the
        PMS sent anyway may still be on its way (the lean engine reuses a 204/304 when nothing
        followed it; aiohttp gives no such guarantee). Marked as the head is parsed, since
        aiohttp pools a connection as soon as its answer ends."""
        if self._answered:
            raise BadHttpMessage("an answer after the answer")
        message = super().parse_message(lines)
        self._answered = message.code >= 200
        if (message.code < 200 or message.code in (204, 304)) and self.protocol is not None:
            self.protocol.force_close()  # type: ignore[attr-defined]  # a ResponseHandler
        return message


class StrictResponseHandler(ResponseHandler):
    """aiohttp's client protocol with `StrictAnswerParser` in place of the lenient C parser.
    The body is aiohttp's `set_response_params` (3.14) with only the parser class changed."""

    def set_response_params(
        self,
        *,
        timer: BaseTimerContext | None = None,
        skip_payload: bool = False,
        read_until_eof: bool = False,
        auto_decompress: bool = True,
        read_timeout: float | None = None,
        read_bufsize: int = DEFAULT_CHUNK_SIZE,
        timeout_ceil_threshold: float = 5,
        max_line_size: int = 8190,
        max_field_size: int = 8190,
        max_headers: int = 128,
    ) -> None:
        self._skip_payload = skip_payload
        self._read_bufsize = read_bufsize
        self._read_timeout = read_timeout
        self._timeout_ceil_threshold = timeout_ceil_threshold
        self._parser = StrictAnswerParser(
            self,
            self._loop,
            read_bufsize,
            timer=timer,
            payload_exception=ClientPayloadError,
            response_with_body=not skip_payload,
            read_until_eof=read_until_eof,
            auto_decompress=auto_decompress,
            max_line_size=max_line_size,
            max_field_size=max_field_size,
            max_headers=max_headers,
        )
        self._drain_tail()


def parse_strictly(connector: aiohttp.TCPConnector) -> None:
    """Make every connection `connector` opens parse its answers with `StrictAnswerParser`."""
    connector._factory = functools.partial(StrictResponseHandler, loop=connector._loop)  # type: ignore[attr-defined]
