"""Refusal pages in the staff's language (issue 15, item 3): each refusal of a login
(lockout with the time it ends, a group's network, a deactivated account, an unknown
user) and the plain 429 page has its own title and sentence in en, fr, de and cs. Table-
driven: every refusal in every language, through the real gateway in front of the demo
PMS; outside `en`, no English sentence of the catalogue is left on the page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.pages.render import LANGUAGES, _catalogs
from gateway.policy import load_policy
from gateway.proxy.errors import error_response
from tests.login_env import Browser, login_env

CATALOG = _catalogs()


def _english_fragments() -> set[str]:
    """Every piece of English catalogue text of two words or more (split at placeholders)."""
    fragments = set()
    for text in CATALOG["en"].values():
        for piece in re.split(r"\{[^}]*\}", text):
            piece = piece.strip(" .:;,")
            if len(piece.split()) >= 2:
                fragments.add(piece)
    return fragments


ENGLISH = _english_fragments()


def visible_text(page: str) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def assert_page(page: str, lang: str, key: str, **values: str) -> None:
    catalog = CATALOG[lang]
    assert catalog[key] != CATALOG["en"][key] or lang == "en", (lang, key)  # really translated
    title = re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)
    assert html.unescape(title) == catalog[key], (lang, key, title)
    text = re.search(r'<p id="error-text">(.*?)</p>', page, re.S).group(1)
    assert html.unescape(text) == catalog[key + "_text"].format(**values), (lang, key, text)
    assert 'id="error-detail"' not in page, (lang, key)  # no fixed English reason below
    assert f'<html lang="{lang}">' in page
    if lang != "en":
        shown = visible_text(page)
        leftovers = sorted(fragment for fragment in ENGLISH if fragment in shown)
        assert not leftovers, (lang, key, leftovers)


def refusal_policy():
    policy = load_policy("policies/default.yaml")
    data = policy.model_dump(mode="json")
    data["login"]["usernames"]["unknown"] = "refuse"
    data["default_group"] = None
    data["networks"]["back_office"] = ["10.20.0.0/16"]
    data["groups"]["management"]["networks"] = ["back_office"]  # manager: not from 127.0.0.1
    data["captcha"]["when"] = []  # so failures reach the lockout
    data["lockout"]["per_user"] = {"failures": 2, "within": 900, "lock_for": 900}
    return type(policy).model_validate(data)


REFUSALS = [  # (who tries, expected status, message key)
    ("nobody", 403, "refused_unknown_user"),
    ("manager", 403, "refused_network"),
    ("bob", 403, "refused_deactivated"),
    ("alice", 429, "refused_locked"),
]


async def test_each_refusal_in_each_language(tmp_path) -> None:
    async with login_env(tmp_path, policy=refusal_policy()) as env:
        await env.services.users.ensure("bob")
        await env.services.users.set_active("bob", False)
        await lock_out(env)
        seen = 0
        for user, status, key in REFUSALS:
            for lang in LANGUAGES:
                browser = Browser(env)
                try:
                    got, headers, page = await _login_in(browser, user, lang)
                finally:
                    await browser.close()
                assert got == status, (user, lang, got, page[:300])
                values = {}
                if key == "refused_locked":
                    retry = int(headers["Retry-After"])
                    until = datetime.fromtimestamp(env.clock(), UTC) + timedelta(seconds=retry)
                    values["until"] = until.strftime("%H:%M:%S UTC")
                    assert 0 < retry <= 900
                assert_page(page, lang, key, **values)
                seen += 1
        assert seen == len(REFUSALS) * len(LANGUAGES)
        assert await env.pms_users_alive() == []  # no refused login reached the PMS


async def lock_out(env, user: str = "alice", failures: int = 2) -> None:
    """Enough wrong passwords to lock `user` under `refusal_policy()`."""
    setup = Browser(env)
    try:
        for _ in range(failures):
            await setup.password(user, "wrong-password")
    finally:
        await setup.close()


async def _login_in(browser: Browser, user: str, lang: str):
    status, _, page = await browser.request("GET", "/login", headers={"Accept-Language": f"{lang},en;q=0.1"})
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return await browser.request(
        "POST", "/login", data=f"username={user}&password=some-password&csrf_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept-Language": f"{lang},en;q=0.1",
                 "Sec-Fetch-Site": "same-origin", "Origin": browser.env.url},
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_429_has_its_own_page(lang: str) -> None:
    request = make_mocked_request("GET", "/x", headers={"Accept-Language": lang, "Accept": "text/html"})
    response = error_response(request, 429, "req-1", "Hotel Demo")
    assert response.status == 429
    assert_page(response.text, lang, "too_many_requests")


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/New_York"])
async def test_the_lockout_page_shows_the_end_in_the_propertys_time_zone(tmp_path, zone: str) -> None:
    """A receptionist in Kathmandu reads when the lock ends on her own clock, not in UTC."""
    policy = refusal_policy().model_copy(update={"property_timezone": zone})
    async with login_env(tmp_path, policy=policy) as env:
        await lock_out(env)
        for lang in ("en", "de"):
            browser = Browser(env)
            try:
                status, headers, page = await _login_in(browser, "alice", lang)
            finally:
                await browser.close()
            assert status == 429
            now = datetime.fromtimestamp(env.clock(), ZoneInfo(zone))
            until = now + timedelta(seconds=int(headers["Retry-After"]))
            shown = until.strftime("%H:%M:%S %Z" if until.date() == now.date() else "%Y-%m-%d %H:%M:%S %Z")
            assert "UTC" not in shown and until.utcoffset() != timedelta(0)
            assert_page(page, lang, "refused_locked", until=shown)
