"""Cookies on both sides of the gateway.

The browser holds only gateway cookies (and whatever PMS cookies the policy lets through,
such as a CSRF token its scripts read). The PMS's session cookies live in the session's
vault: injected on the way up, taken out of every answer on the way down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote_plus

from gateway.policy.schema import LoginRule

SESSION_COOKIE = "gw_session"
DEVICE_COOKIE = "gw_device"
PENDING_COOKIE = "gw_pending"
REMEMBER_COOKIE = "gw_remember"
NOTICE_COOKIE = "gw_notice"
CAPTCHA_COOKIE = "gw_captcha"
STEP_UP_COOKIE = "gw_step_up"  # a re-authentication held for the second factor (auth/step_up.py)
HELD_LOGIN_COOKIE = "gw_held"  # the key of a login held while its captcha is solved
ACCOUNT_LINK_COOKIE = "gw_account_link"  # set by injected.js: the "my account" link was hidden
# The operator console's (admin listener): cookies ignore ports, so a browser sends them to
# the PMS's origin too when both are reached under one host name; never forwarded, never
# set by the PMS (its session token would reach the PMS, or a PMS page could toss one).
CONSOLE_COOKIE = "gw_console"  # `__Host-gw_console` over TLS
CONSOLE_PRE_COOKIE = "gw_console_pre"
CONSOLE_LANG_COOKIE = "gw_console_lang"
CONSOLE_COOKIES = frozenset({CONSOLE_COOKIE, "__Host-" + CONSOLE_COOKIE, CONSOLE_PRE_COOKIE, CONSOLE_LANG_COOKIE})
GATEWAY_COOKIES = frozenset(
    {SESSION_COOKIE, DEVICE_COOKIE, PENDING_COOKIE, REMEMBER_COOKIE, NOTICE_COOKIE, CAPTCHA_COOKIE, HELD_LOGIN_COOKIE, STEP_UP_COOKIE,
     ACCOUNT_LINK_COOKIE, *CONSOLE_COOKIES}
)
DEVICE_COOKIE_MAX_AGE = 400 * 86400  # the longest browsers keep a cookie
# `name=` inside a cookie's value after white space, a comma or a quote: another pair to
# aiohttp and Python's SimpleCookie (they split on white space) and to RFC 2109 parsers
# (Tomcat's legacy one splits on commas).
_PHP_MANGLED = re.compile(r"[. \[]")  # PHP turns these into `_` in variable (and cookie) names
_HIDDEN_PAIR = re.compile(r'[\s,"]+([^\s,;="]+)\s*=')


def set_cookie(
    name: str,
    value: str,
    *,
    secure: bool,
    max_age: int | None = None,
    path: str = "/",
    same_site: str = "Lax",
    http_only: bool = True,
) -> str:
    parts = [f"{name}={value}", f"Path={path}", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie(name: str, *, secure: bool, path: str = "/") -> str:
    return set_cookie(name, "", secure=secure, max_age=0, path=path)


def cookie_name(name: str) -> str:
    """A cookie name as browsers store it: trimmed of whitespace (RFC 6265, section 5.2).

    `PMSSESSID =x` and `PMSSESSID\t=x` are the cookie `PMSSESSID` to a browser and to most
    servers, so every comparison of cookie names goes through here. The trim is generous
    (any Unicode whitespace): where a name is compared with a vaulted one, matching too
    much only strips or vaults a cookie, matching too little leaks one.
    """
    return name.strip()


def _name_value(pair: str) -> tuple[str, str]:
    """One `name=value` pair, both trimmed; no `=` makes an empty name (RFC 6265bis)."""
    name, sep, value = pair.partition("=")
    if not sep:
        name, value = "", name
    return cookie_name(name), value.strip()


def parse_cookie_header(header: str | None) -> list[tuple[str, str]]:
    """The browser's `Cookie` header as (trimmed name, value) pairs, the only reader of it.

    A pair without a name (no `=`, or `=x`) is left out: servers read it differently
    (as a name, as a value, not at all), so it is never forwarded either.
    """
    return list(_pairs(header or ""))


@lru_cache(maxsize=1024)
def _pairs(header: str) -> tuple[tuple[str, str], ...]:
    """One reading per distinct header: a request's addons each ask about its cookies, and
    a browser sends the same header request after request (read once, kept immutable)."""
    pairs = []
    for item in header.split(";"):
        name, value = _name_value(item)
        if name:
            pairs.append((name, value))
    return tuple(pairs)


@lru_cache(maxsize=1024)
def _first_values(header: str) -> dict[str, str]:
    """Name -> the first value sent under it (never handed out: callers get one value)."""
    values: dict[str, str] = {}
    for name, value in _pairs(header):
        values.setdefault(name, value)
    return values


def hidden_names(value: str) -> list[str]:
    """Cookie names a lenient server reads inside one pair's value (`theme=dark PMSSESSID=x`
    is `theme=dark` here and in browsers, but also `PMSSESSID=x` to aiohttp)."""
    return _HIDDEN_PAIR.findall(value) if value else []


def set_cookie_name(header: str) -> str:
    """The trimmed name a `Set-Cookie` header value sets ('' when it has none)."""
    return _name_value(header.partition(";")[0])[0]


def cookie_value(header: str | None, name: str) -> str | None:
    """The first value sent under `name`, as `parse_cookie_header` reads the header."""
    return _first_values(header).get(name) if header else None


class CookiePolicy:
    """Which upstream cookies are vaulted, per the login rule.

    Names are compared trimmed (`cookie_name`); the listed session cookies also without
    regard to case, since some PMS frameworks (ASP.NET) read cookie names that way: a
    browser-sent `pmssessid` must not reach such a PMS beside the vault's `PMSSESSID`.
    An allow-list (`vault_all_cookies_except`) is compared exactly: anything else is vaulted.
    """

    def __init__(self, rule: LoginRule) -> None:
        self.session_names = frozenset(cookie_name(n).casefold() for n in rule.upstream_session_cookies)
        self.allow_list = (
            None if rule.vault_all_cookies_except is None
            else frozenset(cookie_name(n) for n in rule.vault_all_cookies_except)
        )

    def is_vaulted(self, name: str) -> bool:
        name = cookie_name(name)
        if self.allow_list is not None:
            return name not in self.allow_list
        return name.casefold() in self.session_names

    def _holds_vaulted(self, name: str) -> bool:
        """`name` is a gateway or vaulted cookie to some PMS: as sent, or (session names)
        as PHP reads it, percent-decoded with `.`, ` ` and `[` made `_` (`PMS%53ESSID`)."""
        if name in GATEWAY_COOKIES or self.is_vaulted(name):
            return True
        if self.allow_list is not None or ("%" not in name and "+" not in name and not _PHP_MANGLED.search(name)):
            return False
        decoded = unquote_plus(name, errors="replace")
        return any(self.is_vaulted(reading) or reading in GATEWAY_COOKIES
                   for reading in (decoded, _PHP_MANGLED.sub("_", decoded), _PHP_MANGLED.sub("_", name)))

    def upstream_cookie_header(self, browser_header: str | None, vault: dict[str, str]) -> str | None:
        """The browser's cookies minus gateway and vaulted names, plus the vault's cookies.

        The header is rebuilt from the pairs read here, so the PMS sees exactly the
        cookies the gateway judged, under their trimmed names. A pair whose value hides a
        gateway or vaulted name (`theme=dark PMSSESSID=x`, `a=b, PMSSESSID=x`) is dropped
        whole: a PMS splitting on white space or commas would read a second session cookie;
        so is a name PHP decodes into a session cookie's (`PMS%53ESSID`): PHP keeps the
        first of two, which would be the browser's and not the vault's.
        """
        if not browser_header and not vault:
            return None
        pairs = [
            (k, v)
            for k, v in parse_cookie_header(browser_header)
            if not self._holds_vaulted(k) and not any(self._holds_vaulted(h) for h in hidden_names(v))
        ]
        pairs.extend(vault.items())
        return "; ".join(f"{k}={v}" for k, v in pairs) or None

    def take_vaulted(self, set_cookies: Iterable[str]) -> tuple[dict[str, str | None], list[str]]:
        """Split Set-Cookie values into vault updates (None = deleted) and those for the browser.

        A vaulted cookie is stored under its trimmed name, whatever spacing the PMS wrote.
        A cookie without a name is dropped: a browser would send its value back as
        `name=value` (`=PMSSESSID=x` comes back as `PMSSESSID=x`).
        """
        updates: dict[str, str | None] = {}
        passed: list[str] = []
        for header in set_cookies:
            pair, _, attributes = header.partition(";")
            name, value = _name_value(pair)
            if not name or name in GATEWAY_COOKIES:
                continue  # the PMS may not set cookies in the gateway's names, nor nameless ones
            if not self.is_vaulted(name):
                passed.append(header)
                continue
            updates[name] = None if _is_deletion(value, attributes) else value
        return updates, passed


def _is_deletion(value: str, attributes: str) -> bool:
    if value in ("", '""', "deleted"):
        return True
    for attribute in attributes.split(";"):
        key, _, raw = attribute.strip().partition("=")
        if key.lower() == "max-age" and raw.strip().lstrip("-").isdigit() and int(raw) <= 0:
            return True
        if key.lower() == "expires" and "1970" in raw:
            return True
    return False


def apply_vault_updates(vault: dict[str, str], updates: dict[str, str | None]) -> bool:
    changed = False
    for name, value in updates.items():
        if value is None:
            changed |= vault.pop(name, None) is not None
        elif vault.get(name) != value:
            vault[name] = value
            changed = True
    return changed
