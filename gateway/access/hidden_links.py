"""Hiding the links a group cannot use (`access.hide_links`): cosmetic, by design.

The protection is the access rule itself: a denied path gets the gateway's 403 and never
reaches the PMS, whatever the page shows. With `hide_links`, the group's menu entries to
denied sections disappear as well: the gateway links a same-origin stylesheet into the
PMS's HTML pages (`/_gateway/hide/<hash>.css`, named after its content) that hides
`a[href^="/reports"]`, `form[action^="/reports"]` and the like, and a list item that holds
nothing but such a link (a menu entry with its separator). The PMS's markup is not
rewritten otherwise.

Only deny rules whose set of paths a CSS prefix selector describes exactly become
selectors: `^` followed by a literal path (escaped punctuation allowed) and then nothing,
`$`, `(/|$)`, `(?:/|$)`, `(/.*)?$` or `(?:/.*)?$`. Anything else (character classes,
quantifiers, alternatives, an unanchored pattern) is left out, since hiding a link the
group may use would be worse than showing one it may not. The same goes for the first-
match order: an earlier `allow` rule becomes an exception (`:not(...)`) to every later deny
rule, and an earlier allow rule that cannot be converted ends the conversion. Links are
matched as written: root-relative hrefs (`/reports`) only, not relative or absolute URLs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from aiohttp import web

from gateway.policy.schema import AccessRule, Policy
from gateway.proxy.exchange import Addon, Exchange, UpstreamAnswer
from gateway.proxy.page_injection import Insertion, inject_html
from gateway.proxy.server import RESERVED_PREFIX, PolicyGetter

STYLESHEET_PATH = RESERVED_PREFIX + "hide/"
# The tails after the literal prefix that a CSS selector list can describe exactly.
_TAIL_FORMS = {
    "": ("^=",),
    "$": ("=", "?", "#"),
    "(/|$)": ("=", "/", "?", "#"),
    "(?:/|$)": ("=", "/", "?", "#"),
    "(/.*)?$": ("=", "/", "?", "#"),
    "(?:/.*)?$": ("=", "/", "?", "#"),
}
_SPECIAL = set(".^$*+?{}[]\\|()")
_QUANTIFIERS = set("*+?{")
_CSS_SAFE = re.compile(r"[!#-~]*")  # printable ASCII but space and `"`; `\\` is escaped below


def literal_prefix(pattern: str) -> tuple[str, tuple[str, ...]] | None:
    """(`/reports`, forms) for a pattern a prefix selector describes exactly, else None.

    `forms` says what may follow the prefix in a matching href: `^=` anything, `=` nothing,
    `/`, `?` or `#` that character and anything.
    """
    if not pattern.startswith("^"):
        return None
    literal: list[str] = []
    at = 1
    while at < len(pattern):
        char = pattern[at]
        if char == "\\" and at + 1 < len(pattern) and not pattern[at + 1].isalnum():
            char, step = pattern[at + 1], 2
        elif char in _SPECIAL:
            break
        else:
            step = 1
        if at + step < len(pattern) and pattern[at + step] in _QUANTIFIERS:
            return None  # `^/reports?`: the last character is optional
        literal.append(char)
        at += step
    prefix, tail = "".join(literal), pattern[at:]
    if not prefix.startswith("/") or tail not in _TAIL_FORMS or not _CSS_SAFE.fullmatch(prefix):
        return None
    return prefix, _TAIL_FORMS[tail]


def _attribute_selectors(attribute: str, prefix: str, forms: tuple[str, ...], flag: str) -> list[str]:
    value = prefix.replace("\\", "\\\\")
    selectors = []
    for form in forms:
        if form in ("^=", "="):
            selectors.append(f'[{attribute}{form}"{value}"{flag}]')
        else:
            selectors.append(f'[{attribute}^="{value}{form}"{flag}]')
    return selectors


@dataclass(frozen=True, slots=True)
class _Prefix:
    prefix: str
    forms: tuple[str, ...]

    def selectors(self, attribute: str, flag: str) -> list[str]:
        return _attribute_selectors(attribute, self.prefix, self.forms, flag)


def hiding_stylesheet(rules: list[AccessRule], case_insensitive: bool = False) -> str:
    """The CSS that hides links and forms to what `rules` deny ('' when nothing converts)."""
    flag = " i" if case_insensitive else ""
    allowed_before: list[_Prefix] = []
    blocks: list[str] = []
    for rule in rules:
        converted = literal_prefix(rule.allow or rule.deny or "")
        if rule.allow is not None:
            if converted is None:
                break  # an allow rule CSS cannot describe: later denies may not apply to a link
            allowed_before.append(_Prefix(*converted))
            continue
        if converted is None:
            continue
        denied = _Prefix(*converted)
        for element, attribute, method_filter in _elements(rule.methods):
            exceptions = [s for allowed in allowed_before for s in allowed.selectors(attribute, flag)]
            unless = f":not({', '.join(exceptions)})" if exceptions else ""
            for selector in denied.selectors(attribute, flag):
                blocks.append(f"{element}{method_filter}{selector}{unless}")
                if element == "a":  # a menu entry that is nothing but the link goes with it
                    blocks.append(f"li:has(> a{selector}{unless}:only-child)")
    if not blocks:
        return ""
    return ",\n".join(blocks) + " {\n  display: none !important;\n}\n"


def _elements(methods: list[str] | None) -> list[tuple[str, str, str]]:
    """(element, attribute, extra filter) the rule's methods make unusable."""
    if methods is None:
        return [("a", "href", ""), ("form", "action", "")]
    found = []
    if "GET" in methods:
        found += [("a", "href", ""), ("form", "action", ":not([method])"), ("form", "action", '[method="get" i]')]
    if "POST" in methods:
        found.append(("form", "action", '[method="post" i]'))
    return found


class HiddenLinks(Addon):
    """Links the group's hiding stylesheet into the PMS's HTML pages, and serves it."""

    def __init__(self, policy: PolicyGetter) -> None:
        self.policy = policy
        self._built: tuple[int, dict[str, str], dict[str, str]] | None = None

    def _sheets(self) -> tuple[dict[str, str], dict[str, str]]:
        """(group -> stylesheet name, name -> CSS) for the current policy version."""
        policy = self.policy()
        if self._built is None or self._built[0] != id(policy):
            self._built = (id(policy), *_build(policy))
        return self._built[1], self._built[2]

    async def response(self, ex: Exchange, answer: UpstreamAnswer) -> web.StreamResponse | None:
        session = ex.notes.get("session")
        if session is None:
            return None
        name = self._sheets()[0].get(session.group)
        if name is not None:
            link = f'<link rel="stylesheet" href="{STYLESHEET_PATH}{name}.css">'
            await inject_html(ex.request.method, answer, [Insertion(link, "head")])
        return None

    def routes(self) -> list[web.RouteDef]:
        return [web.get(STYLESHEET_PATH + "{name}.css", self._stylesheet)]

    async def _stylesheet(self, request: web.Request) -> web.Response:
        css = self._sheets()[1].get(request.match_info["name"])
        if css is None:
            raise web.HTTPNotFound()
        # Named after its content: a changed policy gives a new name, so it may be cached.
        return web.Response(
            text=css, content_type="text/css", headers={"Cache-Control": "private, max-age=86400, immutable"}
        )


def _build(policy: Policy) -> tuple[dict[str, str], dict[str, str]]:
    names: dict[str, str] = {}
    sheets: dict[str, str] = {}
    for group, settings in policy.groups.items():
        if not settings.access.hide_links:
            continue
        css = hiding_stylesheet(settings.access.rules, policy.upstream.case_insensitive_paths)
        if css:
            name = hashlib.sha256(css.encode()).hexdigest()[:16]
            names[group], sheets[name] = name, css
    return names, sheets
