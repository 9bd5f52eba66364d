"""Console pages: one jinja2 environment, four languages, the property's time zone, and
what every list screen shares (paging, CSV export with formula cells neutralised).

No inline script or style anywhere (the CSP forbids both); every page is `no-store`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from gateway.pages.render import LANGUAGES, choose_language
from gateway.sessions.cookies import CONSOLE_LANG_COOKIE

HERE = Path(__file__).parent
LANG_COOKIE = CONSOLE_LANG_COOKIE
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PAGE_SIZE = 50
CONSOLE = web.AppKey("console", Any)  # the Console (gateway.admin.console.app) of this listener
SESSION = web.RequestKey("console_session", Any)  # auth.ConsoleSession of the request
OPERATOR = web.RequestKey("console_operator", Any)  # operators.Operator signed in

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


@lru_cache(maxsize=1)
def catalogs() -> dict[str, dict[str, str]]:
    return json.loads((HERE / "messages.json").read_text(encoding="utf-8"))


class Translator:
    """`t("key", name=...)`; a key missing in a language falls back to English and is
    remembered in `missing` (the i18n test fails on any)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.missing: set[str] = set()

    def __call__(self, key: str, **values: Any) -> str:
        catalog = catalogs()
        text = catalog.get(self.lang, {}).get(key)
        if text is None:
            self.missing.add(key)
            text = catalog["en"].get(key, key)
        return text.format(**values) if values else text

    def value(self, prefix: str, raw: Any) -> str:
        """A stored enumeration (outcome, login type, decision) in words when the catalog
        has it, else as stored: it is data, not interface text."""
        text = catalogs().get(self.lang, {}).get(f"{prefix}.{raw}")
        return text if text is not None else ("" if raw is None else str(raw))


def language(request: web.Request) -> str:
    """?lang= (the switch), then the console's language cookie, then Accept-Language."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    return choose_language(request.headers.get("Accept-Language"))


class Clock:
    """Times in the property's time zone (policy `property_timezone`)."""

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)

    def local(self, value: datetime | float | None) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, self.zone)
        return value.astimezone(self.zone)

    def show(self, value: datetime | float | None, seconds: bool = False) -> str:
        local = self.local(value)
        return "" if local is None else local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def parse(self, text: str | None) -> datetime | None:
        """A filter's `2025-03-01` or `2025-03-01T08:00`, in the property's time zone."""
        if not text:
            return None
        value = datetime.fromisoformat(text.strip())
        return value if value.tzinfo else value.replace(tzinfo=self.zone)


@dataclass
class Table:
    """What a list screen shows and exports: column keys (translated as `col.KEY`) and rows
    of cells. A cell is text, or a dict with `text` and optionally `href`, `flag` (red)."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    actions: list[list[dict[str, Any]]] = field(default_factory=list)  # per row: forms (see list.html)


def neutralise(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or tab/CR, which
    some read past) gets a leading apostrophe. Names, user agents and paths are typed by
    attackers."""
    text = "" if value is None else str(value.get("text", "") if isinstance(value, dict) else value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_response(table: Table, t: Translator, filename: str) -> web.Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([t(f"col.{c}") for c in table.columns])
    for row in table.rows:
        writer.writerow([neutralise(row.get(c)) for c in table.columns])
    response = web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8")
    response.headers.update(HEADERS)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def page_number(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        return 1


def query_with(request: web.Request, **changes: Any) -> str:
    """This screen's URL with some query parameters changed (paging, CSV link)."""
    query = {k: v for k, v in request.query.items() if k not in changes and k != "lang"}
    query.update({k: str(v) for k, v in changes.items() if v is not None})
    return str(request.rel_url.with_query(query))


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    lang = language(request)
    t = Translator(lang)
    body = environment.get_template(template).render(lang=lang, languages=LANGUAGES, t=t, request=request,
                                                     query_with=lambda **c: query_with(request, **c), **context)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(HEADERS)
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, request.query["lang"], path="/", samesite="Strict", httponly=True,
                            max_age=365 * 86400)
    return response


@dataclass
class Screen:
    """A list screen: its title key, filters (URL query fields), forms above the table, the
    table, and whether a next page exists. `?format=csv` exports exactly what is shown."""

    name: str  # nav entry and CSV file name
    filters: list[dict[str, Any]] = field(default_factory=list)
    forms: list[dict[str, Any]] = field(default_factory=list)
    table: Table = field(default_factory=lambda: Table([]))
    has_next: bool = False
    notice: str | None = None  # a message key shown above the table
    notice_values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def page_of(request: web.Request, items: Sequence[Any]) -> tuple[list[Any], bool]:
    """Offset paging (`?page=`) of a list read whole: this page's items and whether a next
    page exists."""
    number = page_number(request)
    return list(items[(number - 1) * PAGE_SIZE: number * PAGE_SIZE]), len(items) > number * PAGE_SIZE


def keyset_page(screen: Screen, rows: list[Any]) -> list[Any]:
    """Keyset paging (`?before=<id>`) of records read newest first with `PAGE_SIZE + 1`
    as the limit: sets `has_next` and the id the next page starts below; returns the
    page's rows."""
    screen.has_next = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    screen.extra["next_before"] = rows[-1]["id"] if screen.has_next else None
    return rows


def screen_response(request: web.Request, screen: Screen, nav: dict[str, Any], template: str = "list.html",
                    status: int = 200) -> web.Response:
    if request.query.get("format") == "csv":
        return csv_response(screen.table, Translator(language(request)), screen.name)
    return render(request, template, status=status, screen=screen, page=page_number(request), **nav)


def nav(request: web.Request) -> dict[str, Any]:
    """What the layout needs: the operator, its CSRF token (sign-out form), the property."""
    console = request.app[CONSOLE]
    session = request.get(SESSION)
    return {"operator": request.get(OPERATOR), "csrf": session.csrf if session else "",
            "property_name": console.policy().property, "tz": console.policy().property_timezone}
