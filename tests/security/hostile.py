"""Sending hand-made requests through a real gateway and seeing what the PMS received.

Hostile requests need what no HTTP client library sends on its own (no Content-Type, two
Content-Type headers, chunked bodies, a `charset=utf-7` form), so `send` writes raw
HTTP/1.1 on a socket. Both PMSs behind the gateway record every request they route, so a
test can assert that a refused request never reached the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml
from aiohttp import web

from gateway.demo import DemoSettings, create_app
from gateway.policy import load_policy
from gateway.policy.schema import Policy
from tests.harness import serve_app
from tests.login_env import LoginEnv, login_env
from tests.security import naive_upstream

FORM = "application/x-www-form-urlencoded"


@dataclass
class Upstream:
    env: LoginEnv
    seen: list  # (method, path, ...) of every request the PMS routed

    def saw(self, path: str) -> bool:
        return any(entry[1] == path for entry in self.seen)


def _recording(app: web.Application) -> list:
    seen: list = []

    @web.middleware
    async def record(request: web.Request, handler):
        seen.append((request.method, request.path))
        return await handler(request)

    app.middlewares.append(record)
    return seen


def _policy(tmp_path, extra_public: list[str], **login: object) -> Policy:
    """policies/default.yaml with an overlay file, loaded as an operator's would be."""
    public = [*load_policy("policies/default.yaml").login.public_paths, *extra_public]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"login": {"public_paths": public, **login}}))
    return load_policy("policies/default.yaml", overlay)


@contextlib.asynccontextmanager
async def naive(tmp_path, **login: object) -> AsyncIterator[Upstream]:
    """The gateway in front of the naive PMS (honours charset, reads Request[]); `/echo` public."""
    app = naive_upstream.create_app()
    async with serve_app(app) as pms, login_env(tmp_path, policy=_policy(tmp_path, ["^/echo"], **login), pms_url=pms) as env:
        yield Upstream(env, app[naive_upstream.SEEN])


@contextlib.asynccontextmanager
async def demo(tmp_path, **login: object) -> AsyncIterator[Upstream]:
    """The gateway in front of the demo PMS, recording what the PMS routed."""
    app = create_app(DemoSettings())
    seen = _recording(app)
    async with serve_app(app) as pms, login_env(tmp_path, policy=_policy(tmp_path, [], **login), pms_url=pms) as env:
        yield Upstream(env, seen)


async def send(
    url: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    chunks: list[bytes] | None = None,
) -> tuple[int, str]:
    """One raw HTTP/1.1 request; `chunks` sends the body chunked instead. (status, body text)."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address.netloc}", f"Origin: {url}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    writer.write("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n")
    try:
        writer.write(payload)  # the gateway may answer and close before it has read it all
        await writer.drain()
    except ConnectionError:
        pass
    raw = await reader.read()
    writer.close()
    head, _, text = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), text.decode("utf-8", "replace")
