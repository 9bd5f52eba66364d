"""Writing what `login discover` saw as a commented `login:` policy section.

Every value says where it came from: seen (the wrong or the real login showed it) or
guessed (a common default the operator must confirm). The text is YAML the policy loader
reads as is: it replaces the `login:` section of a policy file.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from gateway.discover.probe import Discovery
from gateway.policy.schema import LoginRule
from gateway.readers.content_type import codec_name

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@-]*")
_YAML_WORDS = frozenset({"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"})
_DEFAULT_NEXT = LoginRule().next_parameters


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if (_PLAIN.fullmatch(text) or re.fullmatch(r"/[A-Za-z0-9_./-]*", text)) and text.lower() not in _YAML_WORDS \
            and not re.fullmatch(r"[0-9._-]+", text):
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _paths_regex(paths: list[str]) -> str:
    escaped = [re.escape(p.rstrip("/") or "/") for p in dict.fromkeys(paths)]
    body = escaped[0] if len(escaped) == 1 else "(?:" + "|".join(escaped) + ")"
    return f"^{body}/?$" if body != "/" else "^/$"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str, indent: int = 0) -> None:
        self.lines.append(" " * indent + "# " + text)

    def key(self, indent: int, name: str, value: object = ..., note: str = "") -> None:
        line = " " * indent + f"{name}:" + ("" if value is ... else " " + _value(value))
        if note:
            line = line.ljust(44) + "  # " + note
        self.lines.append(line)


def _back_paths(d: Discovery) -> list[str]:
    """Where the PMS sends a browser whose login failed: a redirect there means failure."""
    paths = [d.failure.redirect_path] if d.failure.redirect_path else []
    paths.append(urlsplit(d.page.url).path)
    if not d.form.script_driven:
        paths.append(urlsplit(d.form.url).path)
    return list(dict.fromkeys(paths))


def _success(d: Discovery, w: _Writer) -> None:
    failure, real = d.failure, d.real
    failure_text = d.failure_text
    cookie_set = None
    if real is not None:
        status = [real.answer.status]
        redirect_not_to = _paths_regex(_back_paths(d)) if real.answer.redirect_path else None
        if failure_text and failure_text.encode() in real.answer.body:
            failure_text = None
        set_now = {c.name for c in real.answer.cookies if not c.deleted}
        cookie_set = next((n for n in real.session_cookies if n in set_now), None)
        how = "seen: the real login"
    else:
        # A script's login usually succeeds with 200, a form's with a redirect; the failure's
        # own status stays only where something else tells the two apart.
        status = [200, 201, 204, 302, 303] if d.form.format == "json" else [302, 303]
        if 300 <= failure.status < 400:
            status = sorted({*status, failure.status})
        elif failure.status in status and not failure_text:
            status.remove(failure.status)
        redirect_not_to = _paths_regex(_back_paths(d))
        how = f"guessed from the failure ({failure.status}): confirm with --username"
    w.key(2, "success", note="the PMS accepted the password when ...")
    w.key(4, "status", status, how)
    w.key(4, "redirect_not_to", redirect_not_to,
          "a redirect back to the form is a failure" if redirect_not_to else "the success answer is no redirect")
    if cookie_set:
        w.key(4, "cookie_set", cookie_set, "set by the real login, not by the wrong one")
    if failure_text:
        w.key(4, "failure_text", failure_text, "seen in the wrong login's answer")


def _cookies(d: Discovery, w: _Writer) -> None:
    real = d.real
    page_names = [c.name for c in d.page_cookies]
    if real is not None and real.verified:
        w.key(2, "upstream_session_cookies", real.session_cookies,
              f"seen: {real.landing_path} needs each of them")
        others = [c.name for c in real.answer.cookies if not c.deleted and c.name not in real.session_cookies]
        if others:
            w.comment(f"also set by the real login, left to the browser (not needed to stay signed in): "
                      f"{', '.join(others)}", 2)
        return
    likely = [n for n in d.likely_session_cookies() if n not in page_names]
    if likely:
        w.key(2, "upstream_session_cookies", likely, "guessed from the names: confirm with --username")
        return
    w.comment("No session cookie seen (a wrong login opens no session): every cookie the PMS sets", 2)
    w.comment("is vaulted except those it set with the login page. Run with --username to know it.", 2)
    w.key(2, "upstream_session_cookies", [])
    w.key(2, "vault_all_cookies_except", page_names, "set with the login page: the browser keeps them")
    prelogin = [n for n in d.likely_session_cookies() if n in page_names]
    if prelogin:
        w.comment(f"{', '.join(prelogin)} look(s) like a session cookie but came with the login page, before any", 2)
        w.comment("login: if the PMS keeps that cookie as its session after the login, the gateway cannot vault it.", 2)


def _header(d: Discovery, url: str, w: _Writer) -> None:
    form = d.form
    w.comment(f"`login:` rule found by `pms-gateway login discover {url}`")
    w.comment(f"Login page: {d.page.url}" + (" (a script sends the login)" if form.script_driven else ""))
    w.comment(f"Login request: {form.method} {urlsplit(form.url).path} as {form.format}, "
              f"fields {form.username_field!r} and {form.password_field!r}")
    csrf = [f"field {name!r}" for name in form.csrf_fields]
    if form.csrf_header is not None:
        meta = d.page.csrf_meta
        csrf.append(f"header {form.csrf_header[0]} from <meta name={meta[0] if meta else '?'!r}>")
    csrf += [f"cookie {name}" for name in d.csrf_cookies]
    w.comment("CSRF: " + (", ".join(csrf) if csrf else "none seen") + " (the gateway forwards them unchanged)")
    failure = d.failure
    seen = f"Wrong login (user {d.wrong_username!r}): {failure.status}"
    if failure.location:
        seen += f" redirect to {urlsplit(failure.location).path}" + (
            f"?{urlsplit(failure.location).query}" if urlsplit(failure.location).query else "")
    if d.failure_text:
        seen += f", answer says {d.failure_text!r}"
    w.comment(seen)
    if d.csrf_refused:
        w.comment("WARNING: the wrong login looks refused as forged (CSRF), not for its password: the failure")
        w.comment("signal below may be that refusal. Check the form's CSRF token and cookie.")
    cookies = []
    for c in d.all_cookies:
        where = "login page" if c.name in {p.name for p in d.page_cookies} else "login answer"
        cookies.append(f"{c.name} ({where}{', HttpOnly' if c.http_only else ''}{', deleted' if c.deleted else ''})")
    w.comment("Cookies the PMS set: " + (", ".join(cookies) if cookies else "none"))
    if d.real is None:
        w.comment("Real login: not tried. `--username NAME --password-env VAR` completes one to learn the")
        w.comment("success signal and the session cookie for certain.")
    else:
        real = d.real
        w.comment(f"Real login: {real.answer.status}" + (
            f" redirect to {real.answer.redirect_path}" if real.answer.redirect_path else "")
            + (f", landing page {real.landing_path}" if real.landing_path else
               ", no page told signed-in from not: session cookies unverified")
            + ("; logged out again" if real.logged_out else "; NOT logged out: end that PMS session yourself"))
    if form.format == "multipart":
        w.comment("WARNING: the form posts multipart/form-data; the gateway reads form and json logins only.")
    if form.method == "GET":
        w.comment("WARNING: the form sends the password in the URL (GET): it lands in every access log.")


def render_rule(d: Discovery, url: str) -> str:
    """The commented `login:` section for what `d` found."""
    w = _Writer()
    _header(d, url, w)
    form = d.form
    w.key(0, "login")
    w.key(2, "path", urlsplit(form.url).path)
    if (page := urlsplit(d.page.url).path or "/") != urlsplit(form.url).path:
        w.key(2, "page", page, "the sign-in page browsers are sent to (`path` is what its form posts to)")
    w.key(2, "method", form.method)
    w.key(2, "format", "json" if form.format == "json" else "form")
    w.key(2, "username_field", form.username_field)
    w.key(2, "password_field", form.password_field)
    if form.charset:
        try:
            if codec_name(form.charset) != "utf-8":
                w.key(2, "charset", form.charset, "the login page's charset")
        except ValueError:
            w.comment(f"the page declares charset {form.charset!r}, which the gateway cannot read a login in", 2)
    _success(d, w)
    _cookies(d, w)
    logout = d.real.logout_paths if d.real is not None else d.page.logout_links
    w.key(2, "logout_paths", logout or ["/logout"],
          "links found on the page" if logout else "guessed: no logout link seen, check")
    extra_next = [n for n in form.next_fields if n not in _DEFAULT_NEXT]
    if extra_next:
        w.key(2, "next_parameters", [*_DEFAULT_NEXT, *extra_next], "hidden redirect fields of the form")
    public = [_paths_regex([urlsplit(d.page.url).path]).replace("/?$", "$")]
    for path in d.page.asset_paths:
        folder = path.rsplit("/", 1)[0]
        public.append("^" + re.escape(folder + "/") if folder else "^" + re.escape(path) + "$")
    w.key(2, "public_paths", list(dict.fromkeys(public)), "the login page and what it loads")
    if d.real is not None and d.real.identity_pattern and d.real.landing_path:
        w.key(2, "identity", note="the landing page names the signed-in user")
        w.key(4, "path", d.real.landing_path)
        w.key(4, "pattern", d.real.identity_pattern)
        w.key(4, "status", [200])
    return "\n".join(w.lines) + "\n"
