"""The operator console in a real Chromium: an operator signs in with password and TOTP,
finds a staff login from a new address flagged, revokes that user's live session, forgets
a known IP (and another operator without `forget_known_ip` is refused), invites a user who
enrolls in a second browser, and searches the audit trail by reservation. Screenshots of
every screen are kept in test-artifacts/browser/console-*.png."""

from __future__ import annotations


from tests.audit_wait import audited
from tests.browser import (  # noqa: F401 (browser is a fixture)
    BROWSER_TESTS,
    browser,
    enroll_with_app,
    new_page,
    shot,
    submit_password,
)
from tests.console_env import PASSWORD, console_env
from tests.login_env import Browser

pytestmark = BROWSER_TESTS

SCREENS = ["dashboard", "logins", "known_ips", "sessions", "users", "audit", "support", "outbound", "policy", "operators"]


async def sign_in(page, console, name: str) -> None:
    await page.goto(console.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.fill("#code", console.code(name))
    await page.click("button[type=submit]")
    await page.wait_for_selector("#nav-dashboard")


async def test_operator_console_end_to_end(browser, tmp_path):
    async with console_env(tmp_path) as console:
        env = console.env
        await console.operator("it-admin", "manage_sessions,manage_users,forget_known_ip,support_access,console_admin")
        await console.operator("viewer", "view")
        staff = Browser(env)
        await staff.password("alice")
        await staff.enroll("alice")  # alice's first login: from an address new for her
        assert (await staff.request("GET", "/reservations/1003"))[0] == 200
        await audited(env, lambda r: r["path"] == "/reservations/1003")

        page, errors = await new_page(browser)
        await sign_in(page, console, "it-admin")
        await shot(page, "console-dashboard")
        assert await page.locator("#stat-sessions .value").inner_text() == "1"

        # Login history: alice's login from the new address carries the red mark.
        await page.click("#nav-logins")
        row = page.locator("tr", has=page.locator("td[data-col=user]", has_text="alice"))
        flag = row.locator("td[data-col=new_ip] .flag")
        assert await flag.inner_text() == "NEW"
        assert await flag.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(179, 38, 30)"
        await shot(page, "console-logins")

        # Sessions: revoke alice's; her browser is signed out at its next request.
        await page.click("#nav-sessions")
        await shot(page, "console-sessions")
        await page.click("form.row-action:has(input[name=session]) button")
        await page.wait_for_selector("#notice")
        status, headers, _ = await staff.request("GET", "/reservations")
        assert status in (302, 303) and "/login" in headers["Location"]

        # Known IPs: forget alice's address with a reason.
        await page.click("#nav-known_ips")
        await shot(page, "console-known_ips")
        await page.fill("form.row-action input[name=reason]", "ticket 77: shared kiosk")
        await page.click("form.row-action button")
        await page.wait_for_selector("#notice")
        assert "Nothing to show" in await page.inner_text("table.data")
        forgotten = await audited(env, lambda r: r["decision"] == "forget_known_ip")
        assert forgotten[0]["user"] == "console:it-admin" and forgotten[0]["reason"] == "ticket 77: shared kiosk"

        # ... refused for an operator without forget_known_ip (403, audited).
        await staff.login("alice")
        other, _ = await new_page(browser)
        await sign_in(other, console, "viewer")
        await other.click("#nav-known_ips")
        await other.fill("form.row-action input[name=reason]", "curious")
        await other.click("form.row-action button")
        assert "lacks the permission" in await other.inner_text("main")
        await shot(other, "console-forget-refused")
        await audited(env, lambda r: r["decision"] == "console_denied" and r["user"] == "console:viewer")

        # Users: invite bob; he enrolls in a second browser with the code shown.
        await page.click("#nav-users")
        await page.fill("#invite-user", "bob")
        await page.click("#form-invite button")
        invite = (await page.inner_text("#shown-code")).strip()
        await shot(page, "console-invite")
        bob, _ = await new_page(browser)
        await bob.goto(env.url + "/login")
        await submit_password(bob, "bob")
        await enroll_with_app(bob, env, "bob", invite)
        await bob.click("button[type=submit]")
        await bob.wait_for_function("!location.pathname.startsWith('/_gateway')")
        assert await env.services.users.has_second_factor("bob")

        # Audit trail: who opened reservation 1003.
        await page.goto(console.url + "/audit?identifier=reservation%3D1003")
        cells = await page.locator("td[data-col=path]").all_inner_texts()
        assert cells and set(cells) == {"/reservations/1003"}
        await shot(page, "console-audit-reservation")
        await page.click("td[data-col=at] a")
        assert "reservation" in await page.inner_text("dl.record")
        await shot(page, "console-audit-record")

        for name in SCREENS:
            await page.click(f"#nav-{name}")
            await shot(page, f"console-screen-{name}")
        await page.goto(console.url + "/?lang=cs")
        await shot(page, "console-dashboard-cs")
        assert "Přehled" in await page.inner_text("h1")
        await staff.close()
        assert not [e for e in errors if "Content Security Policy" in e], errors
