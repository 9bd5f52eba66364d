"""The gateway's additions to the PMS's pages under a strict Content-Security-Policy, in a
real Chromium: the notice on the PMS's login page (sign in required, signed out after
inactivity) and the "my account" link (`pages.account_link`) are styled by the gateway's
same-origin stylesheet, on gzip-compressed pages that send `default-src 'self'`, and
Chromium reports no CSP violation. The link's button hides it for the browser session.

Screenshots: test-artifacts/browser/injected-*.png.
"""

from __future__ import annotations

from aiohttp import web

from gateway.demo import DemoSettings, create_app
from gateway.policy.loader import load_policy
from gateway.policy.schema import PagesPolicy
from tests.browser import (  # noqa: F401 (browser is a fixture)
    BROWSER_TESTS,
    browser,
    enroll_with_app,
    new_page,
    noted,
    shot,
    submit_password,
)
from tests.harness import serve_app
from tests.login_env import login_env

pytestmark = BROWSER_TESTS

STRICT_CSP = "default-src 'self'"
STRICT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Night audit</title>
<link rel="stylesheet" href="/static/pms.css"></head>
<body><h1>Night audit &#8211; r&#233;sum&#233;</h1><p>Arrivals: 12. Departures: 9.</p></body></html>"""
_STRICT_PATHS = ("/login", "/night-audit")


def _strict_pms() -> web.Application:
    """The demo PMS, gzip-compressed, with a page of its own and a login page that send a
    CSP allowing nothing but their own origin (no inline style, no inline script)."""
    app = create_app(DemoSettings(compress=True))

    async def night_audit(request: web.Request) -> web.Response:
        return web.Response(text=STRICT_PAGE, content_type="text/html", charset="utf-8")

    async def strict(request: web.Request, response: web.StreamResponse) -> None:
        if request.path in _STRICT_PATHS:
            response.headers["Content-Security-Policy"] = STRICT_CSP

    app.router.add_get("/night-audit", night_audit)
    app.on_response_prepare.append(strict)
    return app


async def _styles(page, selector: str, *properties: str) -> dict[str, str]:
    return await page.evaluate(
        "([sel, props]) => { const s = getComputedStyle(document.querySelector(sel));"
        " return Object.fromEntries(props.map(p => [p, s.getPropertyValue(p)])); }",
        [selector, list(properties)],
    )


async def test_notices_and_account_link_styled_under_a_strict_csp(browser, tmp_path):  # noqa: F811
    policy = load_policy("policies/default.yaml")
    policy = policy.model_copy(update={"pages": PagesPolicy(account_link=True)})
    async with serve_app(_strict_pms()) as pms_url, login_env(tmp_path, policy=policy, pms_url=pms_url) as env:
        page, _ = await new_page(browser)
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        answers: dict[str, dict[str, str]] = {}

        async def note(response) -> None:
            path = response.url.removeprefix(env.url).split("?")[0]
            if path in _STRICT_PATHS:
                answers[path] = await response.all_headers()

        page.on("response", note)

        # Signed out: the PMS page sends the browser to the PMS's login, with the notice.
        await page.goto(env.url + "/night-audit")
        assert "/login" in page.url
        await noted(answers, "/login")
        assert answers["/login"]["content-security-policy"] == STRICT_CSP
        assert answers["/login"].get("content-encoding") == "gzip"
        notice = page.locator("#gateway-notice.gw-notice")
        assert await notice.inner_text() == "Please sign in to continue."
        style = await _styles(page, "#gateway-notice", "background-color", "border-left-color", "border-left-width")
        assert style == {"background-color": "rgb(255, 248, 225)", "border-left-color": "rgb(224, 168, 0)",
                         "border-left-width": "4px"}
        await shot(page, "injected-01-notice-sign-in-required")

        # Signed in: the invite, the authenticator app, then the PMS's own strict page.
        await submit_password(page, "alice")
        await enroll_with_app(page, env, "alice")
        await page.click("button[type=submit]")
        await page.wait_for_load_state()
        answers.pop("/night-audit", None)  # the signed-out visit's answer was the gateway's
        await page.goto(env.url + "/night-audit")
        await noted(answers, "/night-audit")
        assert answers["/night-audit"]["content-security-policy"] == STRICT_CSP
        assert answers["/night-audit"].get("content-encoding") == "gzip"
        assert "Night audit – résumé" in await page.inner_text("h1")  # the page's own bytes intact
        box = page.locator("#gw-account")
        assert await box.is_visible()
        link = page.locator("#gw-account a.gw-account-link")
        assert await link.inner_text() == "My account" and await link.get_attribute("href") == "/_gateway/account"
        style = await _styles(page, "#gw-account", "position", "background-color", "right", "bottom")
        assert style == {"position": "fixed", "background-color": "rgb(31, 78, 121)", "right": "12px",
                         "bottom": "12px"}
        await shot(page, "injected-02-account-link")

        # The link leads to the account page; its button hides it for the browser session.
        await link.click()
        await page.wait_for_url("**/_gateway/account")
        await page.go_back()
        await page.click("#gw-account button.gw-dismiss")
        assert not await box.is_visible()
        await page.reload()
        assert "Night audit" in await page.inner_text("h1") and await box.count() == 0
        await shot(page, "injected-03-link-dismissed")

        # Signed out after inactivity: the notice says so, styled again.
        env.clock.advance(26 * 60)
        await page.goto(env.url + "/night-audit")
        assert "/login" in page.url
        assert "inactivity" in await notice.inner_text()
        style = await _styles(page, "#gateway-notice", "background-color")
        assert style == {"background-color": "rgb(255, 248, 225)"}
        await shot(page, "injected-04-notice-inactivity")

    violations = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
    assert not violations, violations
