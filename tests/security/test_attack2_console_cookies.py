"""The operator console's cookies never cross to the PMS (attack on the features of issue 8).

Cookies ignore ports: an operator who reaches the console (admin listener) and the PMS
(the gateway's proxy) under one host name sends the console's session cookie to the PMS's
origin too, and the gateway forwarded it upstream with the browser's other cookies: the
PMS (its logs, a compromised PMS) held a live console session. The other way, a PMS page
could set the console's cookie names in the browser (fixation, or two of them: signed out).
"""

from __future__ import annotations

from tests.login_env import signed_in_without_csrf
from tests.security.test_cookie_names import names_sent_to_browser, naive_gateway, raw_cookie_request

CONSOLE_COOKIES = "gw_console=console-token; __Host-gw_console=tls-token; gw_console_pre=pre; gw_console_lang=fr"


async def test_console_cookies_sent_to_the_proxy_never_reach_the_pms(tmp_path):
    async with naive_gateway(tmp_path) as env:
        browser = await signed_in_without_csrf(env)
        try:
            seen = await raw_cookie_request(browser, "/echo", CONSOLE_COOKIES + "; theme=dark")
            cookie_header = next(v for k, v in seen["headers"] if k.lower() == "cookie")
            assert "token" not in cookie_header and "gw_console" not in cookie_header, cookie_header
            assert seen["cookies"].get("theme") == "dark" and seen["user"] == "alice"
            for spelling in ("gw.console=console-token", "gw console=console-token"):  # PHP reads gw_console
                seen = await raw_cookie_request(browser, "/echo", spelling)
                assert "console-token" not in str(seen["headers"]), spelling
        finally:
            await browser.close()


async def test_a_pms_page_cannot_set_the_console_cookies(tmp_path):
    async with naive_gateway(tmp_path) as env:
        browser = await signed_in_without_csrf(env)
        try:
            status, _, _ = await browser.request("GET", "/toss-console-cookies")
            assert status == 200
            names = names_sent_to_browser(browser)
            assert "KEPT" in names  # the PMS's own cookies still pass
            assert not any("GW_CONSOLE" in name for name in names), names
        finally:
            await browser.close()
