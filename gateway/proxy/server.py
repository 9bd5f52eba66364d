"""The inbound data plane: accept, check, hand to the addons, forward, answer.

This module knows no feature. It resolves who is asking (client IP, scheme, public host),
computes the canonical path, serves the reserved `/_gateway/` prefix, and runs the addon
hooks around the forward. Everything a hotel cares about (sessions, 2FA, audit) is an
addon.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.audit.path_secrets import path_for_logs
from gateway.config import Config
from gateway.policy.schema import Policy
from gateway.proxy.aiohttp_bodies import RequestBodyTimeout, body_rules, body_timed_out, defer_continue
from gateway.proxy.canonical import AmbiguousPath, CanonicalPath, canonicalize
from gateway.proxy.client_ip import ClientResolver
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import CLIENT, REQUEST_ID, Addon, Client, Exchange, overrides
from gateway.proxy.forward import BodyTooLarge, Forwarder, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.headers import UpstreamRewriter, upstream_request_headers
from gateway.proxy.lean.forward import LeanForwarder
from gateway.proxy.overrides import overrides_method_in_query
from gateway.proxy.outages import outage_of
from gateway.proxy.websocket import is_websocket_upgrade, open_websocket

RESERVED_PREFIX = "/_gateway/"
REFLECTING_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})  # never forwarded (see `handle`)
STATIC_DIR = Path(__file__).parent.parent / "pages" / "static"
log = structlog.get_logger("gateway.proxy")
_EXCHANGED = web.RequestKey("exchanged", bool)  # `handle` built an Exchange and runs its done hooks

PolicyGetter = Callable[[], Policy]


class Gateway:
    """One listener's request handling; `build_app` turns it into an aiohttp application."""

    def __init__(self, config: Config, policy: PolicyGetter, addons: Sequence[Addon] = ()) -> None:
        self.config = config
        self.policy = policy
        self.addons = list(addons)
        self.forwarder = (LeanForwarder if config.listen.engine == "lean" else Forwarder)(config.upstream, config.limits)
        self.resolver = ClientResolver(config.trusted_proxies)
        upstream = urlsplit(config.upstream.url)
        self.upstream_host = upstream.netloc
        self.rewriter = UpstreamRewriter(config.upstream.url, upstream.hostname or "")
        # Unique per process (random prefix) and cheap (no system call per request).
        prefix = secrets.token_hex(4)
        self._request_ids = (f"{prefix}{n:08x}" for n in itertools.count(1))
        self._request_hooks = [a.request for a in self.addons if overrides(a, "request")]
        self._response_hooks = [a.response for a in self.addons if overrides(a, "response")]
        self._done_hooks = [a.done for a in self.addons if overrides(a, "done")]

    # -- lifecycle ---------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, handler_args={})
        app.router.add_get(RESERVED_PREFIX + "health", self._health)
        app.router.add_static(RESERVED_PREFIX + "static/", STATIC_DIR, append_version=False)
        for addon in self.addons:
            app.router.add_routes(addon.routes())
        aiohttp_engine = self.config.listen.engine == "aiohttp"
        # The lean engine owes its 100 Continue and body deadline in its protocol.
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=defer_continue if aiohttp_engine else None)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        app.middlewares.append(self._request_id_middleware)
        if aiohttp_engine:
            app.middlewares.append(body_rules(self.config.limits.request_timeout))
        for addon in self.addons:
            app.middlewares.extend(addon.middlewares())
        return app

    async def _startup(self, _app: web.Application) -> None:
        await self.forwarder.start()
        for addon in self.addons:
            await addon.startup()

    async def _cleanup(self, _app: web.Application) -> None:
        for addon in reversed(self.addons):
            await addon.shutdown()
        await self.forwarder.close()

    @web.middleware
    async def _request_id_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        """Give the gateway's own routes (and crashes) a request id and the Host check."""
        request_id = next(self._request_ids)
        request[REQUEST_ID] = request_id
        request[CLIENT] = self._client(request)
        started, wall_time = time.perf_counter(), time.time()
        if not self._host_allowed(request):
            response = self._error(request, 421, request_id, "unknown host")
            await self._done_without_exchange(request, response, started, wall_time)  # audited too
            return response
        if not request.raw_path.startswith("/"):
            # Absolute form (`GET http://other/ HTTP/1.1`): aiohttp routes on its path and
            # takes its host, a PMS may take either; only origin-form is accepted.
            response = self._error(request, 400, request_id, "absolute-form request target")
            await self._done_without_exchange(request, response, started, wall_time)
            return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await self._done_without_exchange(request, exc, started, wall_time)
            raise
        except Exception as exc:
            response, _ = self._failure(request, request_id, exc)
        else:
            if not response.prepared:
                response.headers.setdefault("X-Request-Id", request_id)
        await self._done_without_exchange(request, response, started, wall_time)
        return response

    async def _done_without_exchange(
        self, request: web.Request, response: web.StreamResponse, started: float, wall_time: float
    ) -> None:
        """Done hooks see every request: the gateway's own pages, and requests refused
        before an exchange existed, get a minimal one (no upstream; decision "gateway",
        "refused" for a 4xx, "error" for a 5xx; the body bytes the answer sends)."""
        if not self._done_hooks or request.get(_EXCHANGED):
            return
        client = request[CLIENT]
        raw_path, _, query = request.raw_path.partition("?")
        ex = Exchange(
            request=request, request_id=request[REQUEST_ID], client_ip=client.ip, scheme=client.scheme,
            host=client.host, path=CanonicalPath(request.path, raw_path), query=query,
            upstream_headers=CIMultiDict(), started=started, wall_time=wall_time,
        )
        status = response.status
        ex.status, ex.decision = status, "gateway" if status < 400 else "refused" if status < 500 else "error"
        ex.bytes_out = _body_bytes(request.method, response)
        await self._run_done_hooks(ex)

    async def _run_done_hooks(self, ex: Exchange) -> None:
        """After the answer: a failing hook (audit, metrics) must not hide the others."""
        for hook in self._done_hooks:
            try:
                await hook(ex)
            except Exception:
                log.exception("done hook failed", request_id=ex.request_id)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # -- the data path -----------------------------------------------------------------

    def _host_allowed(self, request: web.BaseRequest) -> bool:
        """The Host header and the host the gateway goes by (a trusted proxy's
        X-Forwarded-Host), both public names: the PMS builds links (reset e-mails) from them."""
        host = (request.headers.get("Host") or "").lower()
        public = self.config.public_hosts
        return host in public and request[CLIENT].host.lower() in public

    def _client(self, request: web.BaseRequest) -> Client:
        peer, headers = request.remote, request.headers
        tls = request.transport is not None and request.transport.get_extra_info("sslcontext") is not None
        return Client(
            ip=self.resolver.resolve(peer, headers.get("X-Forwarded-For")),
            scheme=self.resolver.scheme(peer, tls, headers.get("X-Forwarded-Proto")),
            host=self.resolver.forwarded_host(peer, headers.get("Host", ""), headers.get("X-Forwarded-Host")),
        )

    def _failure(self, request: web.BaseRequest, request_id: str, exc: Exception) -> tuple[web.Response, str]:
        """An exception from a hook or the gateway's own pages, and the audit reason: 503
        when a dependency is down (sign-in cannot work without it), 500 for anything else."""
        if isinstance(exc, RequestBodyTimeout):  # a guard waited for a body that never ended
            return self._error(request, 408, request_id, None), "request body not received in time"
        dependency = outage_of(exc)
        if dependency is None:
            log.exception("unhandled error", request_id=request_id, path=self._loggable(request.path))
            return self._error(request, 500, request_id, None), "internal error"
        log.warning("dependency unavailable", dependency=dependency, request_id=request_id,
                    path=self._loggable(request.path), error=type(exc).__name__)
        response = error_response(request, 503, request_id, self.policy().property, key="signin_unavailable")
        response.headers["Retry-After"] = "30"
        return response, f"{dependency} unavailable"

    def _loggable(self, path: str) -> str:
        """A path for a log line: reset and guest-link secrets digested (`audit.path_secrets`)."""
        try:
            return path_for_logs(path, self.policy().audit.path_secrets)
        except Exception:  # a log line must never fail the answer
            return "?"

    def _error(self, request: web.BaseRequest, status: int, request_id: str, detail: str | None) -> web.Response:
        response = error_response(request, status, request_id, self.policy().property, detail=detail)
        if request.body_exists and not request.content.at_eof():
            # Answered before the body was read whole (refused early, a broken chunk, the
            # PMS gone mid-body): what is still in flight must never be read as the next
            # request on this connection, so it is closed after the answer.
            response.force_close()
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = request[REQUEST_ID]
        policy = self.policy()
        raw_path = request.raw_path.partition("?")
        try:
            upstream = policy.upstream
            path = canonicalize(
                raw_path[0],
                case_insensitive=upstream.case_insensitive_paths,
                allow_non_ascii=upstream.allow_non_ascii_paths,
                normalise_numbers=upstream.normalise_numbers,
            )
        except AmbiguousPath as exc:
            return self._error(request, 400, request_id, str(exc))
        if path.path.startswith(RESERVED_PREFIX) or path.path == RESERVED_PREFIX.rstrip("/"):
            return self._error(request, 404, request_id, "reserved path")
        if request.method in REFLECTING_METHODS:
            # A PMS (Apache's TraceEnable is on by default) echoes the request, the Cookie
            # header the gateway injected from the vault included, back to the browser.
            return self._error(request, 405, request_id, f"{request.method} is not forwarded")
        if overrides_method_in_query(raw_path[2]):
            return self._error(request, 400, request_id, "_method parameter (method override)")
        client = request[CLIENT]
        upstream_headers = upstream_request_headers(
            request.headers, client_ip=client.ip, scheme=client.scheme, public_host=client.host, request_id=request_id
        )
        ex = Exchange(
            request=request,
            request_id=request_id,
            client_ip=client.ip,
            scheme=client.scheme,
            host=client.host,
            path=path,
            query=raw_path[2],
            upstream_headers=upstream_headers,
        )
        request[_EXCHANGED] = True  # its done hooks run below
        if policy.upstream.host_header == "upstream":
            upstream_headers["Host"] = self.upstream_host
            self.rewriter.rewrite_referrer_headers(upstream_headers, ex.public_origin)
        ex.status = 500  # until an answer exists (a cancelled request keeps it)
        try:
            response = await self._exchange(request, ex)
        except Exception as exc:
            response, reason = self._failure(request, request_id, exc)
            ex.deny("error", reason)
        try:
            ex.status = response.status
            if ex.status >= 500 and ex.decision == "allowed" and ex.upstream_seconds is None:
                ex.deny("error", f"gateway answered {ex.status}")
            return response
        finally:
            await self._run_done_hooks(ex)

    async def _exchange(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        for hook in self._request_hooks:
            answer = await hook(ex)
            if answer is not None:
                return answer
        upstream = None
        try:
            async with asyncio.timeout(self.config.limits.request_timeout):
                if is_websocket_upgrade(request):
                    # The timeout covers the handshake, never the life of the socket.
                    bridge = await open_websocket(request, ex, self.forwarder.session, self.forwarder.url_for(ex))
                else:
                    upstream = await self.forwarder.send(ex)
                    self.rewriter.rewrite(upstream.headers, ex.public_origin)
                    for hook in self._response_hooks:
                        replacement = await hook(ex, upstream)
                        if replacement is not None:
                            upstream.release()
                            return replacement
                    return await self.forwarder.relay(request, ex, upstream)
        except BodyTooLarge as exc:
            ex.deny("refused", "body too large")
            log.info("body too large", request_id=ex.request_id, detail=str(exc))
            return self._refusal(request, ex, upstream, 413)
        except RequestBodyTimeout:
            ex.deny("refused", "request body not received in time")
            return self._refusal(request, ex, upstream, 408)
        except UpstreamUnavailable as exc:
            ex.deny("upstream_error", f"upstream unavailable: {exc}")
            log.warning("upstream unavailable", request_id=ex.request_id, error=str(exc))
            return self._refusal(request, ex, upstream, 502)
        except (UpstreamTimeout, TimeoutError) as exc:
            ex.deny("upstream_error", "upstream timeout")
            log.warning("upstream timeout", request_id=ex.request_id, error=str(exc))
            return self._refusal(request, ex, upstream, 504)
        except BaseException:
            if upstream is not None:  # a hook that raised: its connection is never left held
                upstream.close()
            raise
        return await bridge.run()

    def _refusal(self, request: web.BaseRequest, ex: Exchange, upstream: Any, status: int) -> web.StreamResponse:
        """The error page for a failed forward, unless an answer's head already went out
        (the aiohttp engine's relay, `Answer.sent`): that answer was cut and its connection
        closed, and a second answer must never follow it. The lean engine's relay cuts its
        own, and its protocol never writes an answer after one that started."""
        sent = getattr(upstream, "sent", None)
        if sent is not None:
            return sent
        if upstream is not None:  # read in part, or not at all: never pooled, never held
            upstream.close()
        if body_timed_out(request):  # the forward failed for want of the body (`aiohttp_bodies`)
            ex.deny("refused", "request body not received in time")
            status = 408
        return self._error(request, status, ex.request_id, None)


def server_kwargs(config: Config) -> dict:
    """Parser limits and behaviour of aiohttp's HTTP server for the staff listener."""
    return {
        "access_log": None,
        "auto_decompress": False,  # request bodies pass to the PMS exactly as sent
        "max_line_size": config.limits.max_header_size,
        "max_field_size": config.limits.max_header_size,
        "max_headers": config.limits.max_headers,
        "keepalive_timeout": 75,
    }


def tls_context(config: Config) -> ssl.SSLContext | None:
    if config.listen.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.listen.tls_cert, config.listen.tls_key)
    return context


def _body_bytes(method: str, response: web.StreamResponse) -> int:
    """Body bytes of one of the gateway's own answers: what a streamed answer already
    wrote, else what the prepared body will send (none for HEAD, 204 and 304)."""
    if method == "HEAD" or response.status in (204, 304):
        return 0
    if response.prepared:
        return response.body_length
    return response.content_length or 0
