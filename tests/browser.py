"""A real Chromium (Debian's, via Playwright) for the browser tests.

A browser test module marks itself with `pytestmark = BROWSER_TESTS` (skipped where
Chromium is not installed) and imports the fixture it needs (`page`, `browser`).
Screenshots are kept in test-artifacts/browser/ for a human to look at. The steps of a
first sign-in (password on the PMS's form, invite code, authenticator app) are here once
so that a change of the gateway's pages is followed in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest

from tests.login_env import DEMO_PASSWORDS

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TESTS = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator:
    """A launched Chromium, closed again afterwards."""
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def new_page(browser, *, page_errors: bool = True, **context_options):
    """A page in a fresh context (English, phone-sized) and the list its errors go to: the
    console's errors, and with `page_errors` also the script errors nothing caught."""
    context = await browser.new_context(locale="en-GB", viewport={"width": 420, "height": 860}, **context_options)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    if page_errors:
        page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


@pytest.fixture
async def browser():
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def page():
    """A page whose console must not report a Content Security Policy violation."""
    async with chromium() as launched:
        page, errors = await new_page(launched, page_errors=False)
        yield page
    assert not [e for e in errors if "Content Security Policy" in e], errors


async def noted(seen: dict, key: str) -> None:
    """Wait until a `page.on("response")` handler (which reads headers asynchronously,
    after the page may already have loaded) has noted `key` in `seen`."""
    for _ in range(100):
        if key in seen:
            return
        await asyncio.sleep(0.05)


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def submit_password(page, user: str, password: str | None = None) -> None:
    """Fill the PMS's login form the page shows and submit it: the gateway asks for the
    second factor."""
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password or DEMO_PASSWORDS[user])
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url("**/_gateway/2fa")


async def enroll_with_app(page, env, user: str, invite: str | None = None) -> str:
    """On the invite step: the invite code (a new one unless given), the QR page, the first
    TOTP code; stops on the recovery codes page. Returns the TOTP secret."""
    await page.fill("#invite_code", invite or await env.services.users.create_invite(user))
    await page.click("button[type=submit]")
    await page.wait_for_selector(".qr svg")
    secret = (await page.inner_text("#secret")).strip()
    await page.fill("#code", pyotp.TOTP(secret).at(env.clock()))
    await page.click("form:has(#code) button[type=submit]")
    await page.wait_for_selector("#recovery-codes")
    return secret


async def sign_in_enrolling(page, env, user: str = "alice") -> str:
    """A first sign-in from the PMS's login page to its reservations: password, invite, app,
    continue past the recovery codes. Returns the TOTP secret."""
    await page.goto(env.url + "/login")
    await submit_password(page, user)
    secret = await enroll_with_app(page, env, user)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/reservations")
    return secret
