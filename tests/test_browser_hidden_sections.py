"""Hidden sections in a real Chromium: reception's menu has no Reports entry (`hide_links`),
also when the PMS answers gzip-compressed, and /reports typed by hand gets the 403 page.

Screenshots: test-artifacts/browser/hidden-sections-*.png.
"""

from __future__ import annotations

import pytest

from gateway.demo import DemoSettings, create_app
from tests.browser import BROWSER_TESTS, browser, new_page, noted, shot, sign_in_enrolling  # noqa: F401 (browser is a fixture)
from tests.harness import serve_app
from tests.login_env import login_env

pytestmark = BROWSER_TESTS


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_reception_sees_no_reports_link_and_gets_403_typing_it(browser, tmp_path, compress):  # noqa: F811
    name = "gzip" if compress else "plain"
    async with serve_app(create_app(DemoSettings(compress=compress))) as pms_url:
        async with login_env(tmp_path, pms_url=pms_url) as env:
            page, _ = await new_page(browser)
            encodings: dict[str, str | None] = {}
            failed: list[str] = []

            async def note(response) -> None:
                if response.url.endswith("/reservations"):
                    encodings["reservations"] = (await response.all_headers()).get("content-encoding")
                if response.status >= 400:
                    failed.append(f"{response.status} {response.url.removeprefix(env.url)}")

            page.on("response", note)
            await sign_in_enrolling(page, env, "alice")
            await noted(encodings, "reservations")
            assert encodings["reservations"] == ("gzip" if compress else None)
            menu = page.locator("table.nav")
            assert "Reservations" in await menu.inner_text() and "Reports" not in await menu.inner_text()
            reports = page.locator("a[href='/reports']")
            assert await reports.count() == 1 and not await reports.is_visible()  # in the markup, not shown
            assert await page.locator("a[href='/reservations']").first.is_visible()
            assert not await page.locator("li:has(> a[href='/reports'])").is_visible()  # separator too
            await shot(page, f"hidden-sections-reception-menu-{name}")

            response = await page.goto(env.url + "/reports")  # typed by hand
            assert response.status == 403
            assert "Access denied" in await page.inner_text("body")
            await shot(page, f"hidden-sections-reports-typed-{name}")
            # The stylesheet loaded (nothing failed but the PMS's missing favicon and the 403).
            assert set(failed) <= {"404 /favicon.ico", "403 /reports"} and "403 /reports" in failed, failed

            manager, _ = await new_page(browser)
            await sign_in_enrolling(manager, env, "manager")
            assert await manager.locator("a[href='/reports']").is_visible()
            await shot(manager, f"hidden-sections-manager-menu-{name}")
