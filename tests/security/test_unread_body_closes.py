"""A request whose chunked body breaks after forwarding began: the bytes after the broken
chunk are never read as a next request (nothing smuggled reaches the PMS or gets an
answer), on either engine; the lean engine answers and closes."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import run_gateway, serve_app
from tests.upstream_app import SEEN, create_upstream


@pytest.fixture
async def upstream(tmp_path):
    app = create_upstream(tmp_path)
    async with serve_app(app) as url:
        yield url, app


@pytest.mark.parametrize("engine", ["aiohttp", "lean"])
async def test_bytes_after_a_late_broken_chunk_are_never_a_request(upstream, engine):
    url, app = upstream
    async with run_gateway(url, listen__engine=engine) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\n\r\n5\r\nhello\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(0.3)  # forwarding has begun when the broken chunk comes
        writer.write(b"zz\r\n" + f"GET /echo?smuggled HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode())
        await writer.drain()
        received = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 3):
                received += chunk
        except (ConnectionError, TimeoutError):
            pass
        writer.close()
        assert b"smuggled" not in received and received.count(b"HTTP/1.1 ") <= 1, received[:300]
        assert not any("smuggled" in path for path in app[SEEN])
        if engine == "lean":
            assert received.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")), received[:200]
