"""A Content-Type that is not one media type is refused, not passed unread.

Found by the attack on issue 8: `Content-Type: application/x-www-form-urlencoded, text/plain`
was an unknown media type to the gateway, so the stray-password check let its body pass
unread, while Rack and PHP cut the header at the comma and parse the body as a form
(`password=...` reached the PMS outside the login form). A media type that is not one
`type/subtype` token pair is now unclear, refused with 400 like a doubled Content-Type.
"""

from __future__ import annotations

import pytest

from tests.security.hostile import naive, send

UNCLEAR = [
    "application/x-www-form-urlencoded, text/plain",
    "application/x-www-form-urlencoded,text/plain",
    "text/plain, application/x-www-form-urlencoded",
    "application /x-www-form-urlencoded",
    "multipart/form-data,boundary=x",
]


@pytest.mark.parametrize("content_type", UNCLEAR)
async def test_a_password_behind_an_unclear_media_type_is_refused(tmp_path, content_type):
    async with naive(tmp_path) as upstream:
        status, _ = await send(upstream.env.url, "POST", "/echo", [("Content-Type", content_type)],
                               b"password=manager-demo-pw")
        assert status == 400
        assert not upstream.saw("/echo")


async def test_an_ordinary_upload_type_still_passes(tmp_path):
    async with naive(tmp_path) as upstream:
        status, _ = await send(upstream.env.url, "POST", "/echo", [("Content-Type", "application/vnd.ms-excel")], b"x")
        assert status == 200
