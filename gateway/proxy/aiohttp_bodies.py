"""Request bodies on the aiohttp engine, held to the lean engine's two rules.

- `100 Continue` goes out when a handler first waits for the body, so only once the
  guards let the request through (as nginx does): aiohttp's router sends it as soon as a
  route matches, which told a refused client to upload. A request answered while the 100
  is still owed closes its connection: whether its body follows is unknown.
- A body must arrive whole within `limits.request_timeout` of the request: a guard reading
  a login form waits on it outside the forward's timeout, so a body that never ends held
  a connection (and a handler) for ever. It is refused with 408.

The lean engine does both in its protocol (`lean.server`); these are the same rules on
aiohttp's machinery: an expect handler for the proxy route and a middleware.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestBodyTimeout(asyncio.TimeoutError):
    """The request body did not arrive whole within `limits.request_timeout` (408). A
    TimeoutError, so aiohttp's lingering read of an unread body after the answer ends on it
    and closes the connection."""


class _ContinueOwed(StreamReader):
    """A body sent with `Expect: 100-continue` that no handler waited for yet. The first
    wait sends the 100 and turns the reader back into a plain one (same layout, no slots)."""

    __slots__ = ()

    async def _wait(self, func_name: str) -> None:
        self.__class__ = StreamReader  # type: ignore[assignment]
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(_CONTINUE)
        await StreamReader._wait(self, func_name)


class _ContinueRefused(StreamReader):
    """A body whose request was answered while its 100 was still owed: the browser waits
    for a 100 that never comes, so aiohttp's lingering read after the answer ends at once
    (a TimeoutError is how that read ends) and the connection closes."""

    __slots__ = ()

    async def _wait(self, func_name: str) -> None:
        raise asyncio.TimeoutError("answered without 100 Continue")


def continue_owed(request: web.BaseRequest) -> bool:
    return type(request.content) is _ContinueOwed


async def defer_continue(request: web.Request) -> None:
    """Expect handler of the proxy route: aiohttp's default, with the 100 deferred."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11:
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        if type(request.content) is StreamReader:
            request.content.__class__ = _ContinueOwed
        else:  # a reader of another kind: aiohttp's way (never leave the browser waiting)
            await request.writer.write(_CONTINUE)
            request.writer.output_size = 0


def _too_slow(payload: StreamReader) -> None:
    if not payload.is_eof() and payload.exception() is None:
        payload.set_exception(RequestBodyTimeout("request body not received in time"))


def body_timed_out(request: web.BaseRequest) -> bool:
    return isinstance(request.content.exception(), RequestBodyTimeout)


def body_rules(request_timeout: float):
    """The middleware that holds every request body to both rules (aiohttp engine only)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        timer = asyncio.get_running_loop().call_later(request_timeout, _too_slow, request.content)
        try:
            response = await handler(request)
        except RequestBodyTimeout:  # the gateway's own pages (the proxy route answers it itself)
            response = web.Response(status=408, text="408 Request Timeout\n")
        finally:
            timer.cancel()
        if continue_owed(request) and not request.content.is_eof():
            request.content.__class__ = _ContinueRefused
            response.force_close()
        elif body_timed_out(request):
            response.force_close()
        return response

    return middleware
