"""Issue 8, item 7: a password sent anywhere but the login form never reaches the PMS.

The stray-password check was bypassed by chunked bodies, bodies over 64 KiB, no
Content-Type, `charset=utf-7` and multipart `name=password` / `name*=utf-8''password`.
Each is refused (400, or 413 for a body too large to check) before the PMS sees it, while
ordinary traffic (JSON APIs, uploads, forms without a password) still passes.
"""

from __future__ import annotations

import json

import pytest

from tests.security.hostile import FORM, demo, naive, send

BIG = 64 * 1024


def multipart(*parts: tuple[str, bytes], boundary: str = "XyZ", close: bool = True) -> tuple[list, bytes]:
    """(headers, body) of a multipart/form-data request; each part is (disposition params, data)."""
    body = b"".join(
        b"--%s\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n" % (boundary.encode(), params.encode(), data)
        for params, data in parts
    )
    if close:
        body += b"--%s--\r\n" % boundary.encode()
    return [("Content-Type", f"multipart/form-data; boundary={boundary}")], body


HOSTILE = {
    "chunked form": ([("Content-Type", FORM)], None, [b"note=hi&pass", b"word=manager-demo-pw"], 400),
    "chunked form over 64 KiB": ([("Content-Type", FORM)], None, [b"a=" + b"x" * BIG, b"&password=pw"], 413),
    "form over 64 KiB": ([("Content-Type", FORM)], b"a=" + b"x" * BIG + b"&password=pw", None, 413),
    "no Content-Type": ([], b"password=manager-demo-pw", None, 400),
    "utf-7 form": ([("Content-Type", f"{FORM}; charset=utf-7")], b"pass+AHc-ord=manager-demo-pw", None, 400),
    "unknown charset": ([("Content-Type", f"{FORM}; charset=klingon")], b"note=hi", None, 400),
    "another case": ([("Content-Type", FORM)], b"Password=pw", None, 400),
    "percent-encoded name": ([("Content-Type", FORM)], b"pass%77ord=pw", None, 400),
    "semicolon separator": ([("Content-Type", FORM)], b"note=hi;password=pw", None, 400),
    "compressed form": ([("Content-Type", FORM), ("Content-Encoding", "gzip")], b"note=hi", None, 400),
    "multipart unquoted name": (*multipart(("name=password", b"pw")), None, 400),
    "multipart name*=": (*multipart(("name*=utf-8''password", b"pw")), None, 400),
    "multipart name*= percent-encoded": (*multipart(("name=\"note\"; name*=UTF-8''pass%77ord", b"pw")), None, 400),
    "multipart password after a big file": (
        *multipart(('name="scan"; filename="a.pdf"', b"%PDF" + b"x" * (2 * BIG)), ('name="password"', b"pw")), None, 400,
    ),
    "multipart without closing boundary": (*multipart(('name="note"', b"hi"), close=False), None, 400),
    "multipart without boundary": ([("Content-Type", "multipart/form-data")], b"--a\r\n\r\n", None, 400),
    "JSON nested": ([("Content-Type", "application/json")], b'{"a": [{"password": "pw"}]}', None, 400),
    "JSON escaped key": ([("Content-Type", "application/json")], b'{"p\\u0061ssword": "pw"}', None, 400),
    "JSON not UTF-8": ([("Content-Type", "application/json")], b'{"note": "\xff"}', None, 400),
    "query string": ([("Content-Type", FORM)], b"note=hi", None, 400),
    "cookie": ([("Content-Type", FORM), ("Cookie", "theme=dark; password=pw")], b"note=hi", None, 400),
}
QUERY = {"query string": "?password=pw"}


@pytest.fixture(params=["naive", "demo"])
async def upstream(request, tmp_path):
    async with (naive if request.param == "naive" else demo)(tmp_path) as upstream:
        yield upstream


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_body_is_refused_before_the_pms(upstream, name):
    headers, body, chunks, expected = HOSTILE[name]
    path = "/echo" + QUERY.get(name, "")
    status, page = await send(upstream.env.url, "POST", path, headers, body or b"", chunks=chunks)
    assert status == expected, page
    assert upstream.seen == []


async def test_a_password_in_a_get_query_or_cookie_is_refused(upstream):
    status, _ = await send(upstream.env.url, "GET", "/echo?Password=pw", [])
    assert status == 400
    status, _ = await send(upstream.env.url, "GET", "/echo", [("Cookie", "password=pw")])
    assert status == 400
    assert upstream.seen == []


async def test_ordinary_traffic_still_passes(tmp_path):
    async with naive(tmp_path) as upstream:
        url = upstream.env.url
        api = json.dumps({"reservation": 1002, "guest": {"name": "Ada", "notes": "password reset asked"}}).encode()
        upload = multipart(('name="scan"; filename="password.pdf"', b"%PDF password " + b"x" * (4 * BIG)),
                           ('name="note"', b"hi"))
        requests = [
            ([("Content-Type", "application/json")], api, None),
            ([("Content-Type", f"{FORM}; charset=UTF-8")], b"note=my+password+is+secret&room=12", None),
            ([("Content-Type", FORM)], None, [b"note=chunked", b"&room=12"]),
            upload + (None,),
            ([("Content-Type", "application/octet-stream")], None, [b"password=" + b"x" * BIG] * 3),
            ([("Content-Type", "text/plain")], b"password=not a parameter to any framework", None),
        ]
        for headers, body, chunks in requests:
            status, page = await send(url, "POST", "/echo", headers, body or b"", chunks=chunks)
            assert status == 200, (headers, page)
        assert len(upstream.seen) == len(requests)
