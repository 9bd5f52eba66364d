"""Reading a PMS's login page: its form, CSRF tokens, scripts, links and visible texts.

Parsed with the standard library's HTML parser (tolerant of the broken markup old PMSs
write), never with regular expressions over the markup. Only the inline and same-origin
scripts of a single-page app are searched with patterns, for the one call that posts the
credentials: a script is not markup, and a JavaScript parser would be out of proportion
for finding one `fetch('/api/session', ...)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

# Names that say what a field, meta tag, cookie or link is for.
CSRF_NAME = re.compile(r"csrf|xsrf|authenticity|verification.?token|^_?token$|nonce", re.I)
_USER_NAME = re.compile(r"user|login|e-?mail|account|ident|name", re.I)
_PASSWORD_NAME = re.compile(r"pass|pwd|^pw$|secret", re.I)
_LOGOUT = re.compile(r"log.?out|log.?off|sign.?out|sign.?off|abmelden|d[ée]connexion|odhl[aá]sit", re.I)
_NEXT_NAME = re.compile(r"next|return|redirect|continue|goto|back.?url|^url$", re.I)
_ERROR_CLASS = re.compile(r"error|alert|danger|invalid|warning|fail|message|flash|notice", re.I)
_SKIPPED_TEXT_TAGS = frozenset({"script", "style", "template", "noscript", "title"})
_TEXT_INPUTS = frozenset({"text", "email", "tel", ""})


@dataclass
class Input:
    name: str
    type: str
    value: str
    id: str
    autocomplete: str
    checked: bool


@dataclass
class Form:
    action: str | None  # None: no action attribute (posts to the page itself, or a script sends it)
    method: str
    enctype: str
    accept_charset: str
    inputs: list[Input] = field(default_factory=list)

    @property
    def password_inputs(self) -> list[Input]:
        return [i for i in self.inputs if i.type == "password"]


@dataclass
class Link:
    href: str
    text: str


@dataclass
class Text:
    """One piece of visible text and whether its element looks like an error message."""

    text: str
    marked_as_error: bool


@dataclass
class Page:
    url: str
    forms: list[Form] = field(default_factory=list)
    loose_inputs: list[Input] = field(default_factory=list)  # outside any <form>
    meta: dict[str, str] = field(default_factory=dict)  # lower-cased name -> content
    meta_charset: str | None = None
    inline_scripts: list[str] = field(default_factory=list)
    script_sources: list[str] = field(default_factory=list)  # absolute URLs
    asset_paths: list[str] = field(default_factory=list)  # same-origin stylesheets, scripts, images
    links: list[Link] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)

    def same_origin(self, url: str) -> bool:
        a, b = urlsplit(self.url), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    @property
    def csrf_meta(self) -> tuple[str, str] | None:
        """The CSRF token a page hands its scripts in a `<meta>` tag (Rails, Laravel, Django
        templates): (meta name, token)."""
        for name, content in self.meta.items():
            if CSRF_NAME.search(name) and "param" not in name and content:
                return name, content
        return None

    @property
    def logout_links(self) -> list[str]:
        """Same-origin paths of links and forms that look like a logout."""
        found: list[str] = []
        candidates = [(link.href, link.text) for link in self.links]
        candidates += [(urljoin(self.url, f.action), "") for f in self.forms if f.action]
        for href, text in candidates:
            if self.same_origin(href) and (_LOGOUT.search(urlsplit(href).path) or _LOGOUT.search(text)):
                path = urlsplit(href).path
                if path not in found:
                    found.append(path)
        return found


class _PageParser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.form: Form | None = None
        self.link: Link | None = None
        self.skip_depth = 0  # inside <script>/<style>: not visible text
        self.script: list[str] | None = None
        self.error_depth: list[str] = []  # open elements marked as error messages

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        page = self.page
        if tag == "form":
            self.form = Form(
                action=a.get("action") if "action" in a else None,
                method=(a.get("method") or "GET").upper(),
                enctype=(a.get("enctype") or "application/x-www-form-urlencoded").lower(),
                accept_charset=a.get("accept-charset", ""),
            )
            page.forms.append(self.form)
        elif tag in ("input", "button") or tag == "select" or tag == "textarea":
            kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
            item = Input(a.get("name", ""), kind, a.get("value", ""), a.get("id", ""),
                         a.get("autocomplete", "").lower(), "checked" in a)
            (self.form.inputs if self.form is not None else page.loose_inputs).append(item)
        elif tag == "meta":
            if "charset" in a:
                page.meta_charset = a["charset"]
            name = (a.get("name") or a.get("property") or "").lower()
            if name:
                page.meta[name] = a.get("content", "")
            if a.get("http-equiv", "").lower() == "content-type":
                match = re.search(r"charset=([\w.:-]+)", a.get("content", ""), re.I)
                if match:
                    page.meta_charset = match.group(1)
        elif tag == "a" and a.get("href"):
            self.link = Link(urljoin(page.url, a["href"]), "")
            page.links.append(self.link)
        elif tag == "script":
            if a.get("src"):
                source = urljoin(page.url, a["src"])
                page.script_sources.append(source)
                self._asset(source)
            self.script = []
        elif tag == "link" and a.get("href") and "stylesheet" in a.get("rel", "").lower():
            self._asset(urljoin(page.url, a["href"]))
        elif tag == "img" and a.get("src"):
            self._asset(urljoin(page.url, a["src"]))
        if tag in _SKIPPED_TEXT_TAGS:
            self.skip_depth += 1
        marker = " ".join((a.get("class", ""), a.get("id", ""), a.get("role", "")))
        if _ERROR_CLASS.search(marker) and tag not in ("input", "form", "meta", "link", "img", "br"):
            self.error_depth.append(tag)

    def _asset(self, url: str) -> None:
        if self.page.same_origin(url) and (path := urlsplit(url).path) not in self.page.asset_paths:
            self.page.asset_paths.append(path)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.form = None
        elif tag == "a":
            self.link = None
        elif tag == "script" and self.script is not None:
            if text := "".join(self.script).strip():
                self.page.inline_scripts.append(text)
            self.script = None
        if tag in _SKIPPED_TEXT_TAGS and self.skip_depth:
            self.skip_depth -= 1
        if tag in self.error_depth:
            del self.error_depth[len(self.error_depth) - 1 - self.error_depth[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        if self.script is not None:
            self.script.append(data)
        if self.skip_depth:
            return
        text = " ".join(data.split())
        if not text:
            return
        if self.link is not None:
            self.link.text = (self.link.text + " " + text).strip()
        self.page.texts.append(Text(text, bool(self.error_depth)))


def parse_page(url: str, html: str) -> Page:
    page = Page(url)
    parser = _PageParser(page)
    parser.feed(html)
    parser.close()
    return page


# --- the login form ------------------------------------------------------------------


@dataclass
class ScriptCall:
    """The request a page's script sends with the credentials."""

    url: str
    method: str
    format: str  # form | json
    keys: list[str]  # the JSON object's keys, when the script writes them out
    csrf_header: str | None


@dataclass
class LoginForm:
    """What a browser sends when someone logs in on this page."""

    url: str  # absolute URL the credentials are sent to
    method: str
    format: str  # form | json | multipart
    username_field: str
    password_field: str
    other_fields: dict[str, str]  # sent along: hidden fields (CSRF tokens, `next`), the submit button, ...
    csrf_fields: list[str]
    csrf_header: tuple[str, str] | None  # (header name, token) a script sends
    next_fields: list[str]
    script_driven: bool
    charset: str | None


class NoLoginForm(Exception):
    """The page has no password field a login could be read from."""


def _field_name(item: Input) -> str:
    return item.name or item.id


def _username_input(inputs: list[Input], password: Input) -> Input | None:
    before = inputs[: inputs.index(password)]
    texts = [i for i in inputs if i.type in _TEXT_INPUTS and _field_name(i)]
    for test in (
        lambda i: i.autocomplete == "username",
        lambda i: i.type == "email",
        lambda i: bool(_USER_NAME.search(_field_name(i))) and i in before,
        lambda i: i in before,
        lambda i: bool(_USER_NAME.search(_field_name(i))),
    ):
        matches = [i for i in texts if test(i)]
        if matches:
            return matches[-1] if matches[-1] in before else matches[0]  # the one nearest the password
    return None


def _pick_key(keys: list[str], preferred: str, pattern: re.Pattern[str]) -> str:
    for key in keys:
        if key == preferred:
            return key
    for key in keys:
        if pattern.search(key):
            return key
    return preferred


def login_form(page: Page, scripts: list[str]) -> LoginForm:
    """The login form of `page`; `scripts` are its inline and same-origin script texts.

    A form with a password field and an `action` is a classic login. A password field
    outside any form, or in a form without `action` whose page has a script posting to
    another URL, is a single-page app's login: the script's call gives the URL, method,
    body format, JSON keys and the CSRF header.
    """
    form = next((f for f in page.forms if f.password_inputs), None)
    inputs = form.inputs if form is not None else page.loose_inputs
    passwords = [i for i in inputs if i.type == "password"]
    if not passwords:
        raise NoLoginForm("no password field")
    password = next((p for p in passwords if p.autocomplete == "current-password"), passwords[0])
    user = _username_input(inputs, password)
    if user is None:
        raise NoLoginForm("a password field but no username field beside it")
    charset = (form.accept_charset.split()[0] if form is not None and form.accept_charset else None)
    charset = charset or page.meta_charset
    call = script_call(scripts) if form is None or not form.action else None
    hidden = {i.name: i.value for i in inputs if i.type == "hidden" and i.name}
    other = {i.name: i.value for i in inputs if i.name and i.type in ("hidden", "checkbox", "radio") and
             (i.type == "hidden" or i.checked)}
    submit = next((i for i in inputs if i.type in ("submit", "image") and i.name), None)
    if submit is not None:
        other[submit.name] = submit.value  # ASP.NET WebForms reads which button was pressed
    csrf_fields = [name for name in hidden if CSRF_NAME.search(name)]
    next_fields = [name for name in hidden if _NEXT_NAME.search(name)]
    if call is not None:
        keys = call.keys
        meta = page.csrf_meta
        header = (call.csrf_header, meta[1]) if call.csrf_header and meta else None
        return LoginForm(
            url=urljoin(page.url, call.url), method=call.method, format=call.format,
            username_field=_pick_key(keys, _field_name(user), _USER_NAME),
            password_field=_pick_key(keys, _field_name(password), _PASSWORD_NAME),
            other_fields={k: v for k, v in hidden.items() if k in keys} if call.format == "json" else other,
            csrf_fields=[k for k in keys if CSRF_NAME.search(k)] if call.format == "json" else csrf_fields,
            csrf_header=header, next_fields=next_fields, script_driven=True, charset=charset,
        )
    if form is None:
        raise NoLoginForm("a password field outside any form, and no script call that sends it")
    if not user.name or not password.name:
        raise NoLoginForm("login fields without a name attribute, and no script call that sends them")
    return LoginForm(
        url=urljoin(page.url, form.action or ""), method=form.method,
        format="multipart" if form.enctype.startswith("multipart/") else "form",
        username_field=user.name, password_field=password.name, other_fields=other,
        csrf_fields=csrf_fields, csrf_header=None, next_fields=next_fields,
        script_driven=False, charset=charset,
    )


_CALLS = (
    # fetch('/api/session', {method: 'POST', ...})
    re.compile(r"""\bfetch\(\s*(?P<q>['"`])(?P<url>[^'"`]+)(?P=q)"""),
    # axios.post('/api/session', ...), $.post('/login', ...)
    re.compile(r"""\b(?:axios|\$|jQuery|http)\.(?P<method>post|put)\(\s*(?P<q>['"`])(?P<url>[^'"`]+)(?P=q)""", re.I),
    # xhr.open('POST', '/api/session')
    re.compile(r"""\.open\(\s*['"](?P<method>\w+)['"]\s*,\s*(?P<q>['"`])(?P<url>[^'"`]+)(?P=q)"""),
    # $.ajax({url: '/login', type: 'POST'})
    re.compile(r"""\burl\s*:\s*(?P<q>['"`])(?P<url>[^'"`]+)(?P=q)"""),
)
_METHOD = re.compile(r"""\b(?:method|type)\s*:\s*['"](\w+)['"]""", re.I)
_STRINGIFY = re.compile(r"JSON\.stringify\(\s*\{(?P<body>[^}]*)\}")
_KEY = re.compile(r"""(?:^|,)\s*(?P<q>['"]?)(?P<key>[A-Za-z_$][\w$-]*)(?P=q)\s*(?=:|,|$)""")
_CSRF_HEADER = re.compile(r"""['"](?P<name>X-[\w-]*(?:csrf|xsrf)[\w-]*)['"]""", re.I)
_LOGIN_URL = re.compile(r"log.?in|sign.?in|session|auth|token|logon", re.I)
_WINDOW = 600  # characters after a call where its options are written


def script_call(scripts: list[str]) -> ScriptCall | None:
    """The call in `scripts` that most looks like it posts a login, or None."""
    found: list[tuple[int, ScriptCall]] = []
    for text in scripts:
        for pattern in _CALLS:
            for match in pattern.finditer(text):
                window = text[match.start(): match.end() + _WINDOW]
                groups = match.groupdict()
                method_match = _METHOD.search(window)
                method = (groups.get("method") or (method_match.group(1) if method_match else "GET")).upper()
                stringify = _STRINGIFY.search(window)
                keys = [k.group("key") for k in _KEY.finditer(stringify.group("body"))] if stringify else []
                is_json = stringify is not None or "application/json" in window
                header = _CSRF_HEADER.search(window) or _CSRF_HEADER.search(text)
                call = ScriptCall(groups["url"], method, "json" if is_json else "form", keys,
                                  header.group("name") if header else None)
                score = (method in ("POST", "PUT")) * 4 + bool(_LOGIN_URL.search(call.url)) * 2 + bool(keys)
                found.append((score, call))
    if not found:
        return None
    score, best = max(found, key=lambda item: item[0])
    return best if best.method in ("POST", "PUT") else None


_FAILURE_WORDS = re.compile(
    r"invalid|incorrect|wrong|fail|denied|unknown|not (?:match|valid|found|recogni)|error|try again|"
    r"ungültig|falsch|fehl|incorrecte?|erreur|nesprávn|chyb",
    re.I,
)


def error_texts(page: Page, before: Page) -> list[str]:
    """Visible texts of an answer that were not on the login page, to find the failure
    text of a refused login: texts of elements marked as errors first, then other new
    texts that read like one (not a clock or a counter that changed between requests)."""
    seen = {t.text for t in before.texts}
    new = [t for t in page.texts if t.text not in seen and len(t.text) >= 4]
    marked = [t.text for t in new if t.marked_as_error]
    return marked + [t.text for t in new if not t.marked_as_error and _FAILURE_WORDS.search(t.text)]
