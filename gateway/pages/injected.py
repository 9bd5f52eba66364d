"""The gateway's own markup in the PMS's pages: the notice on its login page and the
"my account" link.

A PMS that sends `Content-Security-Policy: default-src 'self'` blocks inline `style=`
attributes and inline scripts, so an inline-styled notice renders as bare text. Both
pieces are therefore plain elements with `gw-` classes, styled by a same-origin stylesheet
(/_gateway/static/injected.css) and, for the link's dismiss button, driven by a same-origin
script file (/_gateway/static/injected.js): what `'self'` allows. They are put into the
page by `gateway.proxy.page_injection.inject_html`, like every other addition, so gzip, br,
deflate and charsets are handled in one place. Text is HTML-escaped and written as ASCII
(character references), since the markup is inserted byte for byte into pages of any
ASCII-compatible charset.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from gateway.proxy.page_injection import Insertion

STATIC = "/_gateway/static/"
STYLESHEET = Insertion(f'<link rel="stylesheet" href="{STATIC}injected.css">', "head")


def _text(value: str) -> str:
    """Escaped for HTML text and attributes, in ASCII."""
    return html.escape(value).encode("ascii", "xmlcharrefreplace").decode()


def notice(text: str) -> list[Insertion]:
    """A status notice at the top of the page (why the user has to sign in again)."""
    return [STYLESHEET, Insertion(f'<div role="status" id="gateway-notice" class="gw-notice">{_text(text)}</div>', "body")]


def account_link(t: Callable[..., str], href: str) -> list[Insertion]:
    """A small, dismissable "my account" link in a corner of a signed-in page. Only pages
    with a `<body>` get it: an HTML fragment a script fetches never does."""
    label, hide = _text(t("account_link")), _text(t("account_link_hide"))
    element = (
        f'<div id="gw-account" class="gw-account" role="complementary" aria-label="{label}">'
        f'<a class="gw-account-link" href="{_text(href)}">{label}</a>'
        f'<button type="button" class="gw-dismiss" aria-label="{hide}" title="{hide}">&#215;</button>'
        f'</div><script src="{STATIC}injected.js" defer></script>'
    )
    return [STYLESHEET, Insertion(element, "page")]
