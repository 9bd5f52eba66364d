"""A password in the body of a GET, OPTIONS or any other method is a stray password too.

Found by the attack on issue 8: the stray-password check read the bodies of POST, PUT,
PATCH and DELETE only. Rack (Rails, Sinatra) and ASP.NET parse a form body whatever the
method, and the gateway forwarded `GET /echo` with `password=...` in its body to the
naive PMS unread. Every body of a parameter media type is now read, whatever the method.
"""

from __future__ import annotations

import json

import pytest

from tests.security.hostile import FORM, naive, send


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PROPFIND", "REPORT"])
async def test_a_password_in_the_body_of_any_method_is_refused(tmp_path, method):
    async with naive(tmp_path) as upstream:
        status, _ = await send(upstream.env.url, method, "/echo", [("Content-Type", FORM)], b"password=manager-demo-pw")
        assert status == 400
        assert not upstream.saw("/echo")


async def test_a_get_body_without_a_password_still_passes(tmp_path):
    async with naive(tmp_path) as upstream:
        status, body = await send(upstream.env.url, "GET", "/echo", [("Content-Type", FORM)], b"q=rooms")
        assert status == 200 and json.loads(body)["body"] == "q=rooms"
