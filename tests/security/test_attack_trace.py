"""TRACE never reaches the PMS: it would hand the vaulted session cookie to the browser.

Found by the attack on issue 8: the gateway forwarded `TRACE` like any method, with the
vault's `Cookie: PMSSESSID=...` injected. A PMS that answers TRACE by echoing the
request (Apache's `TraceEnable` is on by default; the naive PMS's `/echo` does the same)
showed the session holder the PMS session cookie the gateway exists to keep from
browsers, usable without the gateway's session rules. TRACE, TRACK and CONNECT get 405.
"""

from __future__ import annotations

from tests.login_env import Browser
from tests.security import naive_upstream
from tests.security.hostile import FORM, naive

IDENTITY = {"path": "/", "pattern": "Logged in as <b>([^<]+)</b>", "status": [200]}


async def test_trace_with_a_session_is_refused_before_the_pms(tmp_path):
    async with naive(tmp_path, identity=IDENTITY) as upstream:
        browser = Browser(upstream.env)
        try:
            status, headers, _ = await browser.request(
                "POST", "/login", data="username=alice&password=" + naive_upstream.PASSWORDS["alice"],
                headers={"Content-Type": FORM},
            )
            assert headers.get("Location") == "/_gateway/2fa", (status, headers)
            await browser.enroll("alice")
            upstream.seen.clear()
            status, _, body = await browser.request("TRACE", "/echo")
            assert status == 405 and "PMSSESSID" not in body
            assert not upstream.saw("/echo")
            status, _, body = await browser.request("GET", "/echo")
            assert status == 200 and "PMSSESSID" in body  # the naive PMS does echo it, to a GET too
        finally:
            await browser.close()
