"""One request's journey through the gateway, and the interface features plug into.

The proxy core knows features only through `Addon`: hooks called in order, each optional,
as mitmproxy's addons are. Data flows one way: request hooks (guards) -> forward ->
response hooks (filters) -> done hooks (audit, metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

if TYPE_CHECKING:
    from gateway.proxy.canonical import CanonicalPath


@dataclass(frozen=True, slots=True)
class Client:
    """Who is asking, as resolved once per request (trusted proxies honoured)."""

    ip: str
    scheme: str  # as the browser sees the gateway: http or https
    host: str  # the public Host the browser used (already checked)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"


# Set on every request by the proxy before any handler runs, the gateway's own pages included.
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT = web.RequestKey("client", Client)


@dataclass(slots=True)
class Exchange:
    request: web.BaseRequest
    request_id: str
    client_ip: str
    scheme: str  # as the browser sees the gateway: http or https
    host: str  # the public Host the browser used (already checked)
    path: CanonicalPath
    query: str  # raw query string, forwarded as is
    upstream_headers: CIMultiDict[str]  # what will be sent up; addons may change it
    started: float = field(default_factory=time.perf_counter)
    wall_time: float = field(default_factory=time.time)
    user: str | None = None
    session_hash: str | None = None
    device_id: str | None = None
    decision: str = "allowed"
    reason: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_seconds: float | None = None
    body: bytes | None = None  # set when a guard had to read the request body; forwarded as is
    body_cut: bool = False  # a guard read part of a body that proved too large: never forward it
    notes: dict[str, Any] = field(default_factory=dict)  # per-request state of addons

    @property
    def public_origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    async def read_body(self, limit: int) -> bytes | None:
        """The whole request body if it is at most `limit` bytes, else None.

        Guards that must look inside a body (login credentials, a password field sent
        where it does not belong) call this; the bytes read are then forwarded unchanged.
        A chunked body is read up to `limit` + 1 bytes: when it proves larger, the part
        read is gone from the stream, so the request is marked `body_cut` and the forwarder
        refuses to send it (the guard that asked refuses it anyway).
        """
        if self.body is not None:
            return self.body
        if self.body_cut:
            return None
        if not self.request.body_exists:
            self.body = b""
            return self.body
        length = self.request.content_length
        if length is not None:
            if length > limit:
                return None
            # Not `request.read()`: it refuses bodies over the server's client_max_size (1 MiB),
            # which is for the gateway's own pages, not for a guard's own `limit`.
            self.body = await self.request.content.readexactly(length)
            return self.body
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await self.request.content.read(limit + 1 - size)
            if not chunk:
                self.body = b"".join(chunks)
                return self.body
            chunks.append(chunk)
            size += len(chunk)
        self.body_cut = True
        return None

    def deny(self, decision: str, reason: str) -> None:
        self.decision, self.reason = decision, reason


class UpstreamAnswer(Protocol):
    """What response hooks see of the upstream's answer before it is sent on."""

    status: int
    headers: CIMultiDict[str]  # mutable copy, hop-by-hop already removed

    async def read_body(self, limit: int) -> bytes:
        """Buffer the body (at most `limit` bytes) so a hook can inspect it; it is still sent.

        A larger body raises BodyTooLarge; what was read is kept, so a hook that catches it
        leaves the answer to be relayed whole, untouched."""
        ...

    def replace_body(self, body: bytes) -> None:
        """Send `body` instead of the upstream's."""
        ...


class Addon:
    """Base class with every hook a no-op. Override what the feature needs.

    - `request`: a guard. Return a response to answer without contacting the upstream.
    - `response`: sees the upstream's status and headers (and, on demand, body); may edit
      headers, or return a response to send instead (the login interceptor withholds).
    - `done`: after the answer went out, whatever happened. Must not block. Called for
      every request: the gateway's own pages (`routes`) and requests refused before an
      exchange existed get a minimal Exchange (no upstream, `decision` "gateway", or
      "refused" for an error status), so the audit trail misses nothing.
    - `routes`: the addon's own pages under /_gateway/.
    - `middlewares`: aiohttp middlewares around every request, for a feature that must also
      guard the gateway's own pages (they are not exchanges, so `request` never sees them).
      They run inside the core's own: request id, client and Host are already settled.
    """

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        return None

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        return None

    async def done(self, ex: Exchange) -> None:
        return None

    def routes(self) -> list[web.RouteDef]:
        return []

    def middlewares(self) -> list[Middleware]:
        return []

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def overrides(addon: Addon, hook: str) -> bool:
    """True when `addon` implements `hook`, so the core calls only hooks that do work."""
    return getattr(type(addon), hook) is not getattr(Addon, hook)
