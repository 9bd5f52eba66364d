"""A guest opens the secret link from the confirmation e-mail in Chromium, with no session.

The link's page is in the policy's public guest area: no login page, no gateway cookie,
the guest's own PMS cookie kept by the browser (under the staff cookie's very name).
Screenshots in test-artifacts/browser/ for a human to look at.
"""

from __future__ import annotations

import re


from gateway.demo.app import STATE, DemoSettings, _templates, create_app
from gateway.demo.confirmations import build_email
from tests.browser import BROWSER_TESTS, page, shot  # noqa: F401 (page is a fixture)
from tests.harness import serve_app
from tests.login_env import login_env

pytestmark = BROWSER_TESTS


async def test_guest_opens_the_emailed_secret_link_without_a_session(page, tmp_path):
    pms = create_app(DemoSettings())
    async with serve_app(pms) as pms_url, login_env(tmp_path, pms_url=pms_url) as env:
        reservation = pms[STATE].reservations[1003]
        mail = build_email(reservation, DemoSettings(public_url=env.url), _templates())
        html = mail.get_body(("html",)).get_content()
        link = re.search(r'href="(http[^"]+/guest/booking/[^"]+)"', html).group(1)
        assert link.startswith(env.url + "/guest/booking/1003/")

        await page.set_content(html)  # the guest's mail client shows the confirmation
        await shot(page, "guest-01-confirmation-email")
        await page.click("text=View your booking")
        await page.wait_for_url(link)
        assert await page.inner_text("h1") == "Your booking 1003"
        assert reservation.guest_name.split()[0] in await page.inner_text("#guest")
        assert await page.inner_text("#visit") == "First visit."
        await shot(page, "guest-02-booking-page")

        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert "gw_session" not in cookies and "gw_pending" not in cookies
        assert cookies["PMSSESSID"]["value"].startswith("guest-") and cookies["PMSSESSID"]["path"] == "/guest/"

        await page.reload()
        assert await page.inner_text("#visit") == "Welcome back."  # its own cookie went back up
        await shot(page, "guest-03-booking-page-again")

        await page.goto(env.url + "/reservations")  # the back office is still closed to a guest
        assert "/login" in page.url
