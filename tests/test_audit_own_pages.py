"""The audit record of one of the gateway's own answers carries the bytes it sent
(issue 10 item 8), as a proxied page's does: a page, a redirect, a refusal, HEAD."""

from __future__ import annotations

from tests.audit_wait import audited
from tests.login_env import Browser, login_env


async def test_own_pages_record_the_bytes_sent(tmp_path):
    async with login_env(tmp_path) as env:
        browser = Browser(env)
        try:
            await browser.password("alice")  # a pending login: /_gateway/2fa is a page
            status, _, page = await browser.request("GET", "/_gateway/2fa")
            assert status == 200
            sent = len(page.encode())
            records = await audited(env, lambda r: r["path"] == "/_gateway/2fa" and r["method"] == "GET")
            assert records[0]["bytes_out"] == sent > 500

            status, _, _ = await browser.request("HEAD", "/_gateway/2fa")
            head = await audited(env, lambda r: r["path"] == "/_gateway/2fa" and r["method"] == "HEAD")
            assert head[0]["bytes_out"] == 0

            status, _, body = await browser.request("GET", "/_gateway/no-such-page")
            assert status == 404
            missing = await audited(env, lambda r: r["path"] == "/_gateway/no-such-page")
            assert missing[0]["bytes_out"] == len(body.encode()) > 0
        finally:
            await browser.close()
