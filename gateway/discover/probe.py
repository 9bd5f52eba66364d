"""Asking the PMS: its login page, one deliberately wrong login, optionally one real login.

Every request goes to the PMS directly, redirects are never followed automatically (the
redirect *is* the PMS's answer), and cookies are kept by hand: which answer set which
cookie, and which cookie the PMS needs to know who is signed in, is what is being found
out. The password of a real login is sent once to the PMS and kept nowhere else: not in
the findings, not in any message.
"""

from __future__ import annotations

import codecs
import json
import re
import secrets
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from datetime import UTC, datetime
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import aiohttp

from gateway.discover.page import LoginForm, NoLoginForm, Page, error_texts, login_form, parse_page

MAX_BODY = 512 * 1024
MAX_SCRIPTS = 5  # same-origin scripts read to find a single-page app's login call
MAX_REDIRECTS = 5
USER_AGENT = "pms-gateway-login-discover/1"
_JSON_MESSAGE_KEYS = ("error", "message", "detail", "error_description", "errors", "msg", "reason")
_SESSIONISH = re.compile(r"sess|sid|auth|jwt|ident|remember|token|\.aspx", re.I)


class DiscoverError(Exception):
    """A finding that ends the command: one sentence with the URL and the fix."""


@dataclass
class SeenCookie:
    name: str
    http_only: bool
    deleted: bool


@dataclass
class Answer:
    url: str
    status: int
    location: str | None  # absolute
    content_type: str
    body: bytes
    text: str
    cookies: list[SeenCookie]

    @property
    def redirect_path(self) -> str | None:
        return urlsplit(self.location).path if self.location and 300 <= self.status < 400 else None

    def json_message(self) -> str | None:
        """The message of a JSON error answer (`{"error": "invalid credentials"}`)."""
        if "json" not in self.content_type:
            return None
        try:
            data = json.loads(self.text)
        except ValueError:
            return None
        if isinstance(data, dict):
            for key in _JSON_MESSAGE_KEYS:
                value = data.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
        return None


@dataclass
class RealLogin:
    """What one real login showed."""

    answer: Answer
    landing_path: str | None
    session_cookies: list[str]  # proven: the landing page needs each of them
    verified: bool  # False: the landing page did not tell signed-in from not
    logout_paths: list[str]
    identity_pattern: str | None  # reads the username off the landing page
    logged_out: bool


@dataclass
class Discovery:
    page: Page
    form: LoginForm
    page_cookies: list[SeenCookie]  # set with the login page (CSRF and pre-login cookies)
    wrong_username: str
    failure: Answer
    failure_text: str | None
    csrf_refused: bool  # the wrong login was refused as forged: its signal is not a password's
    real: RealLogin | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def all_cookies(self) -> list[SeenCookie]:
        seen: dict[str, SeenCookie] = {}
        answers = [self.failure] + ([self.real.answer] if self.real else [])
        for cookie in self.page_cookies + [c for a in answers for c in a.cookies]:
            seen.setdefault(cookie.name, cookie)
        return list(seen.values())

    def likely_session_cookies(self) -> list[str]:
        """By name only (no real login): cookies that look like a session, not a CSRF token."""
        from gateway.discover.page import CSRF_NAME

        return [c.name for c in self.all_cookies if _SESSIONISH.search(c.name) and not CSRF_NAME.search(c.name)
                and c.name not in self.csrf_cookies]

    @property
    def csrf_cookies(self) -> list[str]:
        from gateway.discover.page import CSRF_NAME

        return [c.name for c in self.page_cookies if CSRF_NAME.search(c.name)]


def _expired(expires: str) -> bool:
    try:
        when = parsedate_to_datetime(expires)
    except (TypeError, ValueError, IndexError):
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) <= datetime.now(UTC)


class _Browser:
    """A cookie-keeping client that follows no redirect by itself."""

    def __init__(self, client: aiohttp.ClientSession) -> None:
        self.client = client
        self.jar: dict[str, str] = {}

    async def send(self, method: str, url: str, *, cookies: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None, data: object = None) -> Answer:
        sent = dict(headers or {})
        jar = self.jar if cookies is None else cookies
        if jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        try:
            async with self.client.request(method, url, headers=sent, data=data, allow_redirects=False) as r:
                body = await r.content.read(MAX_BODY)
                seen = []
                for name, morsel in r.cookies.items():
                    deleted = (morsel.value in ("", '""') or morsel["max-age"].strip() in ("0", "-1")
                               or _expired(morsel["expires"]))
                    seen.append(SeenCookie(name, bool(morsel["httponly"]), deleted))
                    if cookies is None:
                        if deleted:
                            self.jar.pop(name, None)
                        else:
                            self.jar[name] = morsel.value
                location = r.headers.get("Location")
                try:
                    text = body.decode(r.charset or "utf-8", errors="replace")
                except LookupError:
                    text = body.decode("utf-8", errors="replace")
                return Answer(url, r.status, urljoin(url, location) if location else None,
                              r.headers.get("Content-Type", "").lower(), body, text, seen)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # Never the query: a GET login form's (the real login's password) is in it.
            shown, query = url.split("?", 1)[0], urlsplit(url).query
            reason = str(exc) or type(exc).__name__
            reason = reason.replace(url, shown).replace(query, "...") if query else reason
            raise DiscoverError(
                f"cannot reach {shown} ({reason}): check the address, and run `login discover` on a host "
                "that reaches the PMS directly (the gateway's host)"
            ) from None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _open_page(browser: _Browser, url: str) -> tuple[Answer, Page, list[SeenCookie]]:
    """The login page at `url`, following same-origin redirects (`/` often sends to the form)."""
    cookies: list[SeenCookie] = []
    for _ in range(MAX_REDIRECTS + 1):
        answer = await browser.send("GET", url, headers={"Accept": "text/html,*/*"})
        cookies += answer.cookies
        if answer.location and 300 <= answer.status < 400 and _origin(answer.location) == _origin(url):
            url = answer.location
            continue
        break
    page = parse_page(url, answer.text)
    has_password = any(i.type == "password" for i in [*page.loose_inputs, *(i for f in page.forms for i in f.inputs)])
    if answer.location or (answer.status >= 400 and not has_password):  # some PMSs draw the form with a 401
        raise DiscoverError(
            f"{url} answered {answer.status}" + (f" with a redirect to {answer.location}" if answer.location else "")
            + ": give the URL of the PMS's login page itself (the page with the password field)"
        )
    return answer, page, cookies


async def _scripts(browser: _Browser, page: Page) -> list[str]:
    """The page's inline scripts, plus its same-origin script files when no classic form
    (a form with an `action`) holds the password field: a single-page app's login call."""
    texts = list(page.inline_scripts)
    if any(f.password_inputs and f.action for f in page.forms):
        return texts
    for source in [s for s in page.script_sources if page.same_origin(s)][:MAX_SCRIPTS]:
        answer = await browser.send("GET", source)
        if answer.status == 200:
            texts.append(answer.text)
    return texts


async def _read_login_page(browser: _Browser, url: str) -> tuple[Page, LoginForm, list[SeenCookie]]:
    _, page, cookies = await _open_page(browser, url)
    try:
        form = login_form(page, await _scripts(browser, page))
    except NoLoginForm as exc:
        raise DiscoverError(
            f"no login form found on {page.url} ({exc}): give the URL of the page where staff type their "
            "password (open it in a browser, log out first), not the PMS's start page or API"
        ) from None
    return page, form, cookies


async def _post_login(browser: _Browser, page: Page, form: LoginForm, username: str, password: str) -> Answer:
    """Send the credentials as the page's form or script would, with its CSRF token and cookies."""
    headers = {"Origin": _origin(page.url), "Referer": page.url, "Accept": "text/html,application/json,*/*"}
    if form.csrf_header is not None:
        headers[form.csrf_header[0]] = form.csrf_header[1]
    elif "XSRF-TOKEN" in browser.jar:  # Angular/Laravel convention: the cookie echoed as a header
        headers["X-XSRF-TOKEN"] = unquote(browser.jar["XSRF-TOKEN"])
    fields = {**form.other_fields, form.username_field: username, form.password_field: password}
    if form.format == "json":
        meta = page.csrf_meta
        for key in form.csrf_fields:
            fields[key] = meta[1] if meta else fields.get(key, "")
        headers["Content-Type"] = "application/json"
        return await browser.send(form.method, form.url, headers=headers, data=json.dumps(fields))
    if form.format == "multipart":
        data = aiohttp.FormData()
        for name, value in fields.items():
            data.add_field(name, value)
        return await browser.send(form.method, form.url, headers=headers, data=data)
    charset = form.charset or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    body = urlencode(fields, encoding=charset, errors="xmlcharrefreplace")
    if form.method == "GET":
        return await browser.send("GET", form.url.split("?")[0] + "?" + body, headers=headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return await browser.send(form.method, form.url, headers=headers, data=body.encode("ascii"))


def _failure_text(answer: Answer, page: Page, username: str) -> str | None:
    """A text in the failure answer that the login page did not have, as it appears in
    the raw body (the gateway looks for it there, in UTF-8), and not naming the random
    user (`unknown user discover-1a2b` would never match another login's failure)."""
    candidates = [answer.json_message()] if "json" in answer.content_type else []
    if "html" in answer.content_type or not answer.content_type:
        candidates += error_texts(parse_page(answer.url, answer.text), page)
    for text in candidates:
        if text and username not in text and text.encode() in answer.body:
            return text
    return None


def _looks_like_csrf_refusal(answer: Answer) -> bool:
    return answer.status in (400, 403, 419, 422) and bool(re.search(r"csrf|xsrf|forg|token", answer.text, re.I))


async def discover(url: str, username: str | None = None, password: str | None = None,
                   timeout: float = 15.0) -> Discovery:
    """Read the login page at `url`, send one wrong login, and (given credentials) one real one."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise DiscoverError(f"{url!r} is not an http(s) URL: give the login page's full address, e.g. "
                            "http://10.0.0.5:8081/login")
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": USER_AGENT}, auto_decompress=True,
    ) as client:
        browser = _Browser(client)
        page, form, page_cookies = await _read_login_page(browser, url)
        wrong_username = "discover-" + secrets.token_hex(5)
        failure = await _post_login(browser, page, form, wrong_username, secrets.token_urlsafe(18))
        discovery = Discovery(page, form, page_cookies, wrong_username, failure,
                              _failure_text(failure, page, wrong_username), _looks_like_csrf_refusal(failure))
        if username is not None and password is not None:
            discovery.real = await _real_login(_Browser(client), url, discovery, username, password)
    return discovery


def _same_as_failure(answer: Answer, discovery: Discovery) -> bool:
    failure = discovery.failure
    if answer.status != failure.status or answer.redirect_path != failure.redirect_path:
        return False
    return discovery.failure_text is None or discovery.failure_text.encode() in answer.body


def _signature(answer: Answer, username: str) -> tuple[int, str | None, bool]:
    """How a page answers someone signed in: status, where it redirects, whether it names the user."""
    return answer.status, answer.redirect_path, username.casefold() in answer.text.casefold()


async def _real_login(browser: _Browser, url: str, discovery: Discovery, username: str, password: str) -> RealLogin:
    page, form, _ = await _read_login_page(browser, url)  # a fresh page: a fresh CSRF token
    answer = await _post_login(browser, page, form, username, password)
    if _same_as_failure(answer, discovery):
        raise DiscoverError(
            f"the login of {username!r} at {form.url} was answered like the wrong one ({answer.status}): "
            "check --username and the password in the --password-env variable (if they are right, the PMS "
            "answers both alike: write the success rule by hand, README: Writing the login rule)"
        )
    login_paths = {urlsplit(page.url).path, urlsplit(form.url).path}
    landing = answer.location if answer.redirect_path is not None else _origin(page.url) + "/"
    landing_answer = await browser.send("GET", landing)
    for _ in range(MAX_REDIRECTS):  # e.g. `/` -> `/dashboard`
        next_url = landing_answer.location
        if not (next_url and landing_answer.redirect_path and _origin(next_url) == _origin(landing)
                and landing_answer.redirect_path not in login_paths):
            break
        landing, landing_answer = next_url, await browser.send("GET", next_url)
    signed_in = _signature(landing_answer, username)
    verified = landing_answer.status == 200 and landing_answer.redirect_path is None
    session_cookies: list[str] = []
    if verified:
        for name in list(browser.jar):
            without = {k: v for k, v in browser.jar.items() if k != name}
            if _signature(await browser.send("GET", landing, cookies=without), username) != signed_in:
                session_cookies.append(name)
        verified = bool(session_cookies)
    landing_page = parse_page(landing, landing_answer.text)
    logout_paths = landing_page.logout_links or page.logout_links
    identity = _identity_pattern(landing_answer.text, username) if verified else None
    logged_out = False
    if logout_paths:
        logged_out = await _log_out(browser, landing_page, logout_paths[0], landing, username, signed_in)
    return RealLogin(answer, urlsplit(landing).path if verified else None, session_cookies, verified,
                     logout_paths, identity, logged_out)


async def _log_out(browser: _Browser, page: Page, path: str, landing: str, username: str,
                   signed_in: tuple[int, str | None, bool]) -> bool:
    """End the PMS session the real login opened (as its logout link or form would)."""
    url = _origin(page.url) + path
    form = next((f for f in page.forms if f.action and urlsplit(urljoin(page.url, f.action)).path == path), None)
    headers = {"Origin": _origin(page.url), "Referer": page.url}
    if form is not None and form.method == "POST":
        fields = {i.name: i.value for i in form.inputs if i.type == "hidden" and i.name}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        await browser.send("POST", url, headers=headers, data=urlencode(fields))
    else:
        await browser.send("GET", url, headers=headers)
    return _signature(await browser.send("GET", landing), username) != signed_in


def _identity_pattern(html: str, username: str) -> str | None:
    """A pattern with one group that reads the signed-in user off the landing page:
    the visible text and tags right before the username, and the character after it."""
    for match in re.finditer(re.escape(username), html, re.I):
        start, end = match.span()
        before = html[max(0, start - 80): start].rsplit("\n", 1)[-1]
        # The last visible text before the name and the tags between: `Logged in as <b>`.
        before = re.search(r"[^<>]*(?:<[^<>]*>)*$", before).group().lstrip()  # type: ignore[union-attr]
        after = html[end: end + 1]
        if len(before) < 4 or not after or after.isalnum():
            continue
        pattern = re.escape(before).replace("\\ ", " ") + f"([^{re.escape(after)}\\s]+)" + re.escape(after)
        found = re.search(pattern, html)
        if found and found.group(1).casefold() == username.casefold():
            return pattern
    return None
