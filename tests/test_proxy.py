"""The data plane over real sockets: fidelity, hygiene, canonical paths, limits, errors."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest
from yarl import URL

from gateway.policy.schema import Policy, UpstreamPolicy
from tests.harness import free_port, raw_http, run_gateway, serve_app
from tests.upstream_app import SEEN, create_upstream


@pytest.fixture
async def upstream(tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 400)
    app = create_upstream(tmp_path)
    async with serve_app(app) as url:
        yield url, app


@pytest.fixture
async def gateway(upstream):
    async with run_gateway(upstream[0]) as gw:
        yield gw


@pytest.fixture
async def client():
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        yield session


async def echo(client, gw, path, **kwargs):
    url = URL(gw.url + path, encoded=True)
    async with client.request(kwargs.pop("method", "GET"), url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_methods_query_and_headers_pass_unchanged(gateway, client):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        seen = await echo(
            client,
            gateway,
            "/api/items?b=2&a=%2F&a=3&empty=",
            method=method,
            headers=[("X-Custom", "one"), ("X-Custom", "two"), ("Accept", "text/x-mine")],
            data=b"payload" if method in ("POST", "PUT", "PATCH") else None,
        )
        assert seen["method"] == method
        assert seen["raw_path"] == "/api/items?b=2&a=%2F&a=3&empty="
        headers = seen["headers"]
        assert ["X-Custom", "one"] in headers and ["X-Custom", "two"] in headers
        assert ["Accept", "text/x-mine"] in headers
        assert dict(headers)["Host"] == f"127.0.0.1:{gateway.port}"  # Host preserved
        names = {k.lower() for k, _ in headers}
        assert "user-agent" in names  # the browser's, not one the gateway invented
        if method == "POST":
            assert seen["body_len"] == len(b"payload")


async def test_spoofed_forwarded_for_is_replaced(gateway, client):
    seen = await echo(
        client, gateway, "/x", headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"}
    )
    headers = dict(seen["headers"])
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["Forwarded"] == f"for=127.0.0.1;proto=http;host=127.0.0.1:{gateway.port}"
    assert "X-Real-IP" not in headers
    assert headers["X-Forwarded-Proto"] == "http"


async def test_forwarded_for_believed_from_trusted_proxy(upstream, client):
    async with run_gateway(upstream[0], trusted_proxies="[127.0.0.0/8]") as gw:
        seen = await echo(
            client, gw, "/x", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
        )
    headers = dict(seen["headers"])
    assert headers["X-Forwarded-For"] == "203.0.113.9"  # right-most untrusted hop
    assert headers["X-Forwarded-Proto"] == "https"


async def test_hop_by_hop_headers_removed_both_ways(gateway, client):
    seen = await echo(
        client, gateway, "/x", headers={"Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "TE": "trailers", "Proxy-Authorization": "Basic Zm9v"}
    )
    names = {k.lower() for k, _ in seen["headers"]}
    assert not names & {"x-drop-me", "te", "proxy-authorization"}
    async with client.get(gateway.url + "/hop") as response:
        assert response.headers["X-Normal"] == "kept"
        assert "X-Secret-Hop" not in response.headers
        assert "timeout=5" not in response.headers.get("Keep-Alive", "")


async def test_unknown_host_is_refused(gateway, client, upstream):
    before = len(upstream[1][SEEN])
    async with client.get(gateway.url + "/x", headers={"Host": "evil.example"}) as response:
        assert response.status == 421
        assert response.headers["X-Request-Id"]
    async with client.get(gateway.url + "/x", headers={"Host": f"gateway.test:{gateway.port}"}) as response:
        assert response.status == 200
    assert len(upstream[1][SEEN]) == before + 1


@pytest.mark.parametrize(
    "raw, status, forwarded",
    [
        ("/static/..%2f..%2fadmin", 400, None),
        ("/static/%2e%2e/%2e%2e/admin", 200, "/admin"),
        ("//admin", 200, "/admin"),
        ("/a/./b/../admin", 200, "/a/admin"),
        ("/reservations;jsessionid=ABC", 400, None),
        ("/x%00y", 400, None),
        ("/x%5cadmin", 400, None),
        ("/x%252fadmin", 400, None),
        ("/caf%C3%A9", 400, None),  # non-ASCII: refused unless upstream.allow_non_ascii_paths
        ("/%7Euser", 200, "/~user"),
    ],
)
async def test_canonical_path_is_what_is_forwarded(gateway, upstream, raw, status, forwarded):
    response = await raw_http(
        gateway.port, f"GET {raw} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.startswith(f"HTTP/1.1 {status}".encode()), response[:200]
    if forwarded:
        assert upstream[1][SEEN][-1] == forwarded
    else:
        assert raw.encode() not in response  # the error does not echo the request


async def test_case_insensitive_upstream_paths_are_lowered(upstream, client):
    policy = Policy(upstream=UpstreamPolicy(case_insensitive_paths=True))
    async with run_gateway(upstream[0], policy) as gw:
        seen = await echo(client, gw, "/Admin/Users?Q=Keep")
    assert seen["raw_path"] == "/admin/users?Q=Keep"


async def test_reserved_prefix_is_never_forwarded(gateway, client, upstream):
    before = len(upstream[1][SEEN])
    async with client.get(gateway.url + "/_gateway/health") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    async with client.get(gateway.url + "/_gateway/nothing-here") as response:
        assert response.status == 404
    response = await raw_http(
        gateway.port, f"GET /x/../_gateway/secret HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.startswith(b"HTTP/1.1 404")
    async with client.get(gateway.url + "/_gateway/static/gateway.css") as response:
        assert response.status == 200
    assert len(upstream[1][SEEN]) == before


async def test_location_and_cookie_domain_rewritten(gateway, client, upstream):
    async with client.get(gateway.url + "/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == f"http://127.0.0.1:{gateway.port}/landing?x=1"
    async with client.get(gateway.url + "/set-cookie?value=abc") as response:
        cookies = response.headers.getall("Set-Cookie")
    assert cookies == ["sid=abc; Path=/; HttpOnly", "other=1; Path=/"]


async def test_pool_never_shares_cookies_between_users(gateway, upstream):
    """The upstream sets a cookie for each user; no other user's request may carry it."""
    async def user(index: int) -> list[str | None]:
        seen = []
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            for round_ in range(5):
                headers = {"Cookie": f"sid=user{index}"} if round_ % 2 else {}
                async with session.get(gateway.url + f"/set-cookie?value=user{index}", headers=headers) as r:
                    seen.append((await r.json())["cookie_seen"])
        return seen

    results = await asyncio.gather(*(user(i) for i in range(8)))
    for index, seen in enumerate(results):
        for round_, cookie in enumerate(seen):
            assert cookie == (f"sid=user{index}" if round_ % 2 else None)


async def test_head_204_304_gzip_chunked_and_range_pass_unchanged(gateway, client):
    async with client.head(gateway.url + "/files/big.bin") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(256 * 400)
        assert await response.read() == b""
    async with client.get(gateway.url + "/nocontent") as response:
        assert response.status == 204 and response.headers["X-Kept"] == "yes"
        assert "Transfer-Encoding" not in response.headers
    async with client.get(gateway.url + "/notmodified", headers={"If-None-Match": '"v1"'}) as response:
        assert response.status == 304 and response.headers["ETag"] == '"v1"'
    async with client.get(gateway.url + "/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()) == b"hello " * 1000
    async with client.get(gateway.url + "/chunked") as response:
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert await response.read() == b"".join(f"part-{i};".encode() for i in range(5))
    async with client.get(gateway.url + "/files/big.bin", headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206
        assert await response.read() == bytes(range(10, 20))
        assert response.headers["Content-Range"] == f"bytes 10-19/{256 * 400}"


async def test_websocket_echo_through_gateway(gateway, client):
    async with client.ws_connect(gateway.url.replace("http", "ws") + "/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive()).data == "echo:hello"
        await ws.send_bytes(b"abc")
        assert (await ws.receive()).data == b"cba"


async def test_upstream_down_gives_502_page_with_request_id(client):
    async with run_gateway(f"http://127.0.0.1:{free_port()}") as gw:
        async with client.get(gw.url + "/reservations") as response:
            assert response.status == 502
            request_id = response.headers["X-Request-Id"]
            assert request_id in await response.text()
        async with client.get(gw.url + "/api/x", headers={"Accept": "application/json"}) as response:
            body = await response.json()
            assert response.status == 502 and body["request_id"] == response.headers["X-Request-Id"]


async def test_slow_upstream_gives_504(upstream, client):
    async with run_gateway(upstream[0], upstream__read_timeout="0.3") as gw:
        async with client.get(gw.url + "/slow?s=2") as response:
            assert response.status == 504
            assert response.headers["X-Request-Id"] in await response.text()


SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: H\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: H\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: H\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    b"GET /echo HTTP/1.1\r\nHost: H\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET /echo HTTP/1.1\nHost: H\n\n",
    b"POST /echo HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost : H\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("attempt", SMUGGLING, ids=["cl-te", "dup-cl", "obs-fold", "bare-lf", "te-twice", "space-colon", "te-unknown"])
async def test_smuggling_attempts_rejected_and_not_forwarded(gateway, upstream, attempt):
    before = len(upstream[1][SEEN])
    attempt = attempt.replace(b"Host: H", f"Host: 127.0.0.1:{gateway.port}".encode())
    response = await raw_http(gateway.port, attempt)
    assert response.split(b" ")[1] in (b"400", b"501"), response[:100]
    assert b"smuggled" not in response and b"X-Folded" not in response and b"echo" not in response
    await asyncio.sleep(0.05)
    assert len(upstream[1][SEEN]) == before


async def test_header_and_body_limits(upstream, client):
    async with run_gateway(upstream[0], limits__max_body_size="1000", limits__buffer_below="100") as gw:
        async with client.get(gw.url + "/x", headers={"X-Big": "a" * 20000}) as response:
            assert 400 <= response.status < 500
        async with client.post(gw.url + "/x", data=b"a" * 2000) as response:
            assert response.status == 413
        async def chunks():
            for _ in range(30):
                yield b"a" * 100
        async with client.post(gw.url + "/x", data=chunks()) as response:
            assert response.status == 413
        async with client.post(gw.url + "/x", data=b"a" * 900) as response:
            assert response.status == 200 and (await response.json())["body_len"] == 900


async def test_upstream_host_mode_rewrites_origin_and_referer(upstream, client):
    policy = Policy(upstream=UpstreamPolicy(host_header="upstream"))
    async with run_gateway(upstream[0], policy) as gw:
        seen = await echo(
            client, gw, "/x", method="POST", data=b"x",
            headers={"Origin": gw.url, "Referer": gw.url + "/page?a=1"},
        )
    headers = dict(seen["headers"])
    assert headers["Host"] == upstream[0].removeprefix("http://")
    assert headers["Origin"] == upstream[0]
    assert headers["Referer"] == upstream[0] + "/page?a=1"


async def test_client_leaving_mid_download_is_quiet_and_harmless(gateway, client, capsys):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"GET /endless HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.read(100)).startswith(b"HTTP/1.1 200")
    writer.transport.abort()  # a cancelled page load
    await asyncio.sleep(0.3)
    async with client.get(gateway.url + "/after") as response:
        assert response.status == 200
    captured = capsys.readouterr()
    assert "unhandled error" not in captured.out + captured.err


async def test_answer_without_content_type_reaches_the_browser_without_one(client):
    """Old PMSs send pages without Content-Type; aiohttp would label them octet-stream."""

    async def legacy(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        body = b"<html>legacy</html>"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(legacy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_gateway(f"http://127.0.0.1:{port}") as gw:
            async with client.get(gw.url + "/page") as response:
                assert response.status == 200 and await response.read() == b"<html>legacy</html>"
                assert "Content-Type" not in response.headers
    finally:
        server.close()
