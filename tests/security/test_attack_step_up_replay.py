"""The step-up replay (307 back to a re-authentication form) replays only what was held.

Found by the attack on issue 8: the held form was replayed for any re-post to its path,
whatever query string the re-post carried. The body had been read by the credential
reader with the query it came with; the replay went up with another one, unread, so a
PMS that reads a missing credential from the query (ASP.NET's `Request[]`) could be
handed `?username=manager` after the second factor. The replay's target must be the
held one exactly; anything else is read as a request of its own (and refused).
"""

from __future__ import annotations

import re

from tests.login_env import login_env
from tests.test_login_flow import enrolled, new_browser

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_a_replay_with_another_query_is_not_the_held_form(tmp_path):
    async with login_env(tmp_path) as env:
        browser = await new_browser(env)
        await enrolled(env, browser)
        _, _, page = await browser.request("GET", "/reservations/1001/erase")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        body = f"csrf_token={token}&password=alice-demo-pw"
        status, headers, _ = await browser.request("POST", "/reservations/1001/erase", data=body, headers=dict(FORM))
        assert (status, headers["Location"]) == (303, "/_gateway/2fa")
        env.clock.advance(30)
        status, headers, _ = await browser.submit(action="verify", code=env.code("alice"))
        assert (status, headers["Location"]) == (307, "/reservations/1001/erase")

        status, _, _ = await browser.request(
            "POST", "/reservations/1001/erase?username=manager", data="csrf=x&code=1", headers=dict(FORM)
        )
        assert status == 400
        assert "Erased guest" not in (await browser.request("GET", "/reservations/1001"))[2]
        # The held form is spent: the right target afterwards replays nothing either.
        status, _, _ = await browser.request("POST", "/reservations/1001/erase", data="csrf=x&code=1", headers=dict(FORM))
        assert status == 400
