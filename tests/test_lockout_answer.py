"""The lockout answer (issue 12 item 6): 429 with a translated title and sentence, the time
the lock ends and what to do (contact IT), for a browser's page and a script's JSON alike,
through the real gateway in front of the demo PMS. Nothing of the refused login reaches
the PMS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.pages.render import LANGUAGES, _catalogs
from tests.login_env import Browser, login_env
from tests.test_refusal_pages import _login_in, assert_page, lock_out, refusal_policy

CATALOG = _catalogs()
CONTACT = {"en": "IT support", "fr": "support informatique", "de": "IT-Support", "cs": "IT podporu"}


def test_every_language_says_what_to_do() -> None:
    for lang in LANGUAGES:
        assert CONTACT[lang] in CATALOG[lang]["refused_locked_text"], lang
        assert "{until}" in CATALOG[lang]["refused_locked_text"], lang


@pytest.mark.parametrize("lang", ["de", "cs"])
async def test_locked_login_page_and_json_say_the_same(tmp_path, lang) -> None:
    async with login_env(tmp_path, policy=refusal_policy()) as env:
        await lock_out(env)

        browser = Browser(env)
        try:
            status, headers, page = await _login_in(browser, "alice", lang)
            assert status == 429
            until = datetime.fromtimestamp(env.clock(), UTC) + timedelta(seconds=int(headers["Retry-After"]))
            shown_until = until.strftime("%H:%M:%S UTC")
            assert_page(page, lang, "refused_locked", until=shown_until)
            assert CONTACT[lang] in page

            status, headers, body = await browser.request(
                "POST", "/login", data="username=alice&password=some-password",
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                         "Accept-Language": f"{lang},en;q=0.1", "Sec-Fetch-Site": "same-origin",
                         "Origin": env.url},
            )
        finally:
            await browser.close()
        assert status == 429 and int(headers["Retry-After"]) > 0
        until = datetime.fromtimestamp(env.clock(), UTC) + timedelta(seconds=int(headers["Retry-After"]))
        shown_until = until.strftime("%H:%M:%S UTC")  # its own: a second may have passed
        answer = json.loads(body)
        assert answer["error"] == "refused_locked"
        assert answer["lang"] == lang
        assert answer["title"] == CATALOG[lang]["refused_locked"]
        assert answer["until"] == shown_until
        assert answer["message"] == CATALOG[lang]["refused_locked_text"].format(until=shown_until)
        assert CONTACT[lang] in answer["message"]
        assert await env.pms_users_alive() == []
