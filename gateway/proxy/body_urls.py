"""Rewriting the PMS's own absolute URLs inside pages, scripts and stylesheets.

Only for PMSs that build links from their configured address instead of the Host they
receive (policy `upstream.rewrite_body_urls`). Compressed bodies are left alone: the
gateway never decompresses what it forwards.
"""

from __future__ import annotations

from aiohttp import web

from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.server import PolicyGetter

REWRITTEN_TYPES = ("text/html", "text/css", "application/javascript", "text/javascript", "application/json")
MAX_REWRITE_BYTES = 8 * 1024 * 1024


class BodyUrlRewriter(Addon):
    def __init__(self, policy: PolicyGetter, upstream_url: str) -> None:
        self.policy = policy
        origin = upstream_url.rstrip("/")
        self.origins = [origin.encode()]
        # JSON and JS often escape slashes: http:\/\/10.0.0.5:8081
        self.origins.append(origin.replace("/", "\\/").encode())

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        if not self.policy().upstream.rewrite_body_urls:
            return None
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in REWRITTEN_TYPES or answer.headers.get("Content-Encoding", "identity") != "identity":
            return None
        length = answer.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REWRITE_BYTES):
            return None
        body = await answer.read_body(MAX_REWRITE_BYTES)
        public = ex.public_origin.encode()
        rewritten = body.replace(self.origins[0], public).replace(self.origins[1], public.replace(b"/", b"\\/"))
        if rewritten != body:
            answer.replace_body(rewritten)
        return None
