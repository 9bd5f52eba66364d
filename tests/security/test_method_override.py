"""Issue 8, item 2 (second half): the PMS routes on the method and path the rules judged.

The naive upstream honours `X-HTTP-Method-Override`, `X-HTTP-Method`,
`X-Method-Override`, `_method` and `X-Original-URL` / `X-Rewrite-URL`, as Symfony,
Laravel, Rails and IIS rewrite modules do: a POST the rules allowed would become a
DELETE, a GET of a public page a GET of a guarded one. The gateway drops the headers,
refuses `_method` in the query string, and refuses absolute-form request targets (whose
host and path aiohttp and a PMS may read differently).
"""

from __future__ import annotations

import json

import pytest

from tests.harness import raw_http, run_gateway, serve_app
from tests.login_env import Browser, login_env
from tests.security import naive_upstream

METHOD_HEADERS = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
URL_HEADERS = ("X-Original-URL", "X-Rewrite-URL")


@pytest.fixture
async def naive():
    app = naive_upstream.create_app()
    async with serve_app(app) as url, run_gateway(url) as gateway:
        yield app, gateway


async def _send(gateway, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    import aiohttp

    async with aiohttp.ClientSession() as client:
        async with client.request(method, gateway.url + path, headers=headers, allow_redirects=False) as response:
            return response.status, await response.read()


@pytest.mark.parametrize("header", METHOD_HEADERS + URL_HEADERS)
async def test_override_headers_never_reach_the_pms(naive, header):
    app, gateway = naive
    value = "/reservations/1002" if header in URL_HEADERS else "DELETE"
    status, body = await _send(gateway, "POST", "/echo", {header: value, header.lower().replace("-", "_"): value})
    assert status == 200
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["path"] == "/echo"
    names = {name.lower() for name, _ in seen["headers"]}
    assert header.lower() not in names


@pytest.mark.parametrize("header", METHOD_HEADERS)
async def test_a_post_never_reaches_the_delete_route(naive, header):
    app, gateway = naive
    status, body = await _send(gateway, "POST", "/reservations/1002", {header: "DELETE"})
    assert status == 405 and b"deleted" not in body  # the PMS saw the POST it was sent
    assert not any(method == "DELETE" for method, _, _ in app[naive_upstream.SEEN])


@pytest.mark.parametrize("header", URL_HEADERS)
async def test_url_override_does_not_change_the_routed_path(naive, header):
    app, gateway = naive
    status, body = await _send(gateway, "GET", "/echo", {header: "/reservations/1002"})
    assert status == 200 and json.loads(body)["path"] == "/echo"
    assert [path for _, path, _ in app[naive_upstream.SEEN]] == ["/echo"]


@pytest.mark.parametrize("query", ["_method=DELETE", "a=1&_method=DELETE", "%5Fmethod=DELETE", "_METHOD=delete",
                                   "_method%5B%5D=DELETE", "_method"])
async def test_method_parameter_in_the_query_is_refused(naive, query):
    app, gateway = naive
    status, body = await _send(gateway, "POST", "/reservations/1002?" + query, {})
    assert status == 400 and b"DELETE" not in body
    assert app[naive_upstream.SEEN] == []


async def test_ordinary_queries_pass(naive):
    app, gateway = naive
    status, body = await _send(gateway, "GET", "/echo?method=x&payment_method=card", {})
    assert status == 200


@pytest.mark.parametrize("target", [b"http://127.0.0.1/echo", b"HTTP://evil.example:81/echo", b"http://x/_gateway/health"])
async def test_absolute_form_request_targets_are_refused(naive, target):
    app, gateway = naive
    answer = await raw_http(
        gateway.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % gateway.port
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert b"evil.example" not in answer  # the refusal does not echo the request
    assert app[naive_upstream.SEEN] == []


async def test_demo_pms_refuses_overrides_at_the_gateway(tmp_path):
    """The demo PMS honours no override; the gateway in front of it refuses them all the same."""
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            status, _, _ = await browser.request("GET", "/login?_method=DELETE")
            assert status == 400
            status, _, page = await browser.request("GET", "/login", headers={"X-HTTP-Method-Override": "DELETE"})
            assert status == 200 and 'name="username"' in page
            port = int(env.url.rsplit(":", 1)[1])
            answer = await raw_http(port, b"GET http://127.0.0.1/login HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                          b"Connection: close\r\n\r\n" % port)
            assert answer.startswith(b"HTTP/1.1 400")
        finally:
            await browser.close()
