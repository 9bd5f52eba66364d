"""`_method` in a request body: the PMS must route on the method the rules judged.

Found by the attack on issue 8: the gateway dropped the override headers and refused
`_method` in the query string, but Rack (Rails) and Laravel/Symfony also read `_method`
from a POST's form body (Laravel from a JSON body too). A POST the access rules allowed
became a DELETE at the PMS: alice's POST to `/reservations/1002` reached the naive PMS's
DELETE route. A state-changing body carrying `_method`, in any spelling a framework
maps onto it, is refused with 400 by the same body reader as a stray password.
"""

from __future__ import annotations

import pytest

from tests.login_env import signed_in_without_csrf
from tests.security.hostile import FORM, naive, send

IDENTITY = {"path": "/", "pattern": "Logged in as <b>([^<]+)</b>", "status": [200]}
BOUNDARY = "b0undary"
BODIES = [
    (FORM, b"_method=DELETE"),
    (FORM, b"note=x&_METHOD=delete"),
    (FORM, b"_method%5B%5D=DELETE"),
    ("application/json", b'{"_method": "DELETE"}'),
    ("application/json", b'{"\\u005fmethod": "DELETE"}'),
    (f"multipart/form-data; boundary={BOUNDARY}",
     f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--{BOUNDARY}--\r\n'.encode()),
]


@pytest.mark.parametrize(("content_type", "body"), BODIES)
async def test_method_override_in_a_body_is_refused(tmp_path, content_type, body):
    async with naive(tmp_path) as upstream:
        status, _ = await send(upstream.env.url, "POST", "/echo", [("Content-Type", content_type)], body)
        assert status == 400
        assert not upstream.saw("/echo")


async def test_a_post_never_reaches_the_pms_as_a_delete(tmp_path):
    async with naive(tmp_path, identity=IDENTITY) as upstream:
        browser = await signed_in_without_csrf(upstream.env)
        try:
            status, _, page = await browser.request(
                "POST", "/reservations/1002", data="_method=DELETE", headers={"Content-Type": FORM}
            )
            assert status == 400 and "deleted" not in page
            assert not any(method == "DELETE" for method, *_ in upstream.seen)
            status, _, _ = await browser.request("POST", "/echo", data="note=_method", headers={"Content-Type": FORM})
            assert status == 200  # the word in a value is no override
        finally:
            await browser.close()


@pytest.mark.parametrize("query", ["_method%00=DELETE", "a=1;_method=DELETE", "_method.x=DELETE", "_%EF%BD%8Dethod=DELETE"])
async def test_method_override_in_a_query_in_any_spelling_is_refused(tmp_path, query):
    """PHP cuts a name at NUL (`_method%00`), some servers split on `;`: every spelling the
    credential reader folds onto `_method` is refused, as `_method` itself was."""
    async with naive(tmp_path) as upstream:
        status, _ = await send(upstream.env.url, "POST", f"/echo?{query}", [("Content-Type", FORM)], b"a=1")
        assert status == 400
        assert not upstream.saw("/echo")
