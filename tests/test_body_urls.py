"""`upstream.rewrite_body_urls`: the PMS's own absolute URLs inside pages point at the gateway."""

from __future__ import annotations

import gzip

import aiohttp
from aiohttp import web

from gateway.policy.reload import PolicyHolder
from gateway.policy.schema import LoginRule, Policy, UpstreamPolicy
from gateway.proxy.body_urls import BodyUrlRewriter
from tests.harness import run_gateway, serve_app

BASE = web.AppKey("base", list)


def pms_with_absolute_links() -> web.Application:
    """Builds links from its own configured address, not from the Host it receives."""

    async def page(request: web.Request) -> web.Response:
        origin = request.app[BASE][0]
        kind = request.match_info["kind"]
        if kind == "html":
            return web.Response(text=f'<a href="{origin}/reservations">list</a>', content_type="text/html")
        if kind == "json":
            escaped = origin.replace("/", "\\/")  # JSON may escape slashes: http:\/\/host
            return web.Response(text=f'{{"next": "{escaped}\\/reservations"}}', content_type="application/json")
        if kind == "gzip":
            body = gzip.compress(f'<a href="{origin}/x">x</a>'.encode())
            return web.Response(body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})
        return web.Response(body=f"{origin}/file".encode(), content_type="application/octet-stream")

    app = web.Application()
    app[BASE] = []
    app.router.add_get("/{kind}", page)
    return app


async def fetch_all(rewrite: bool) -> tuple[str, str, dict[str, bytes]]:
    policy = Policy(upstream=UpstreamPolicy(rewrite_body_urls=rewrite), login=LoginRule(public_paths=["^/"]))
    app = pms_with_absolute_links()
    async with serve_app(app) as pms:
        app[BASE].append(pms)
        async with run_gateway(pms, policy, addons=[BodyUrlRewriter(PolicyHolder([], policy), pms)]) as gw:
            bodies = {}
            async with aiohttp.ClientSession(auto_decompress=False) as client:
                for kind in ("html", "json", "gzip", "binary"):
                    async with client.get(f"{gw.url}/{kind}") as response:
                        bodies[kind] = await response.read()
            return pms, gw.url, bodies


async def test_absolute_upstream_urls_rewritten_when_asked():
    pms, public, bodies = await fetch_all(rewrite=True)
    assert bodies["html"] == f'<a href="{public}/reservations">list</a>'.encode()
    assert public.replace("/", "\\/").encode() + b"\\/reservations" in bodies["json"]
    assert pms.encode() in gzip.decompress(bodies["gzip"])  # compressed bodies pass untouched
    assert bodies["binary"] == f"{pms}/file".encode()  # only text types are rewritten


async def test_bodies_untouched_by_default():
    pms, public, bodies = await fetch_all(rewrite=False)
    assert bodies["html"] == f'<a href="{pms}/reservations">list</a>'.encode()
