"""TRACE never reaches the PMS: it would hand the vaulted session cookie to the browser.

Found by the attack on issue 8: the gateway forwarded `TRACE` like any method, with the
vault's `Cookie: PMSSESSID=...` injected. A PMS that answers TRACE by echoing the
request (Apache's `TraceEnable` is on by default; the naive PMS's `/echo` does the same)
showed the session holder the PMS session cookie the gateway exists to keep from
browsers, usable without the gateway's session rules. TRACE, TRACK and CONNECT get 405.
"""

from __future__ import annotations

from tests.login_env import signed_in_without_csrf
from tests.security.hostile import naive

IDENTITY = {"path": "/", "pattern": "Logged in as <b>([^<]+)</b>", "status": [200]}


async def test_trace_with_a_session_is_refused_before_the_pms(tmp_path):
    async with naive(tmp_path, identity=IDENTITY) as upstream:
        browser = await signed_in_without_csrf(upstream.env)
        try:
            upstream.seen.clear()
            status, _, body = await browser.request("TRACE", "/echo")
            assert status == 405 and "PMSSESSID" not in body
            assert not upstream.saw("/echo")
            status, _, body = await browser.request("GET", "/echo")
            assert status == 200 and "PMSSESSID" in body  # the naive PMS does echo it, to a GET too
        finally:
            await browser.close()
