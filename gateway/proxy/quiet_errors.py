"""aiohttp's own parse-error answers, without the request echoed back.

aiohttp's HTTP parser already refuses request smuggling (CL+TE, duplicate Content-Length,
obs-fold, bare LF, `chunked, chunked`), but its 400 page quotes the offending request
bytes, which can reflect headers (cookies included) to whoever sent them. The gateway
answers those with a fixed text instead, and logs only the parser's reason.
"""

from __future__ import annotations

from http import HTTPStatus

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("gateway.proxy")


class QuietRequestHandler(RequestHandler):
    def handle_error(self, request, status=500, exc=None, message=None):  # type: ignore[override]
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        log.info("request refused by the HTTP parser", status=status, reason=type(exc).__name__ if exc else None, peer=request.remote)
        response = web.Response(status=status, text=f"{status} {phrase}\n", content_type="text/plain")
        response.force_close()
        return response


class QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """AppRunner whose connections answer malformed requests with `QuietRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, same state: only the factory of per-connection handlers changes.
        server.__class__ = QuietServer
        return server
