"""Rendering the gateway's own pages: one jinja2 environment, one layout, four languages.

Pages carry no inline script or style (a strict Content-Security-Policy is sent with
every page), show the property's name, and are chosen in the browser's language.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

HERE = Path(__file__).parent
LANGUAGES = ("en", "fr", "de", "cs")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader([HERE / "templates", HERE.parent / "auth" / "templates"]),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


@lru_cache(maxsize=1)
def _catalogs() -> dict[str, dict[str, str]]:
    return json.loads((HERE / "messages.json").read_text(encoding="utf-8"))


def choose_language(accept_language: str | None) -> str:
    """The first supported language by the browser's preference (q-values honoured)."""
    if not accept_language:
        return "en"
    ranked = []
    for position, item in enumerate(accept_language.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower().split("-")[0]))
    for _, _, lang in sorted(ranked):
        if lang in LANGUAGES:
            return lang
    return "en"


def translator(lang: str):
    catalogs = _catalogs()

    def translate(key: str, **values: Any) -> str:
        text = catalogs.get(lang, {}).get(key) or catalogs["en"].get(key) or key
        return text.format(**values) if values else text

    return translate


def render_page(
    request: web.BaseRequest,
    template: str,
    *,
    status: int = 200,
    property_name: str,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> web.Response:
    lang = choose_language(request.headers.get("Accept-Language"))
    body = _environment.get_template(template).render(
        lang=lang, t=translator(lang), property_name=property_name, **context
    )
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def staff_time(timestamp: float, zone: str, *, now: float | None = None) -> str:
    """A moment as staff read it on a page: in the property's time zone (policy
    `property_timezone`) with its abbreviation, `14:05:30 CET`; the date too unless it is
    `now`'s day there (`2025-03-01 08:00:00 CET`). Never UTC for a receptionist to convert."""
    tz = ZoneInfo(zone)
    moment = datetime.fromtimestamp(timestamp, tz)
    same_day = now is not None and datetime.fromtimestamp(now, tz).date() == moment.date()
    return moment.strftime("%H:%M:%S %Z" if same_day else "%Y-%m-%d %H:%M:%S %Z")


def wants_json(request: web.BaseRequest) -> bool:
    """XHR and API clients get JSON errors; browsers navigating get pages."""
    accept = request.headers.get("Accept", "")
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return True
    return "application/json" in accept and "text/html" not in accept


def see_other(location: str) -> web.Response:
    """A 303 redirect as a plain response (aiohttp's HTTPException objects are for raising)."""
    return web.Response(status=303, headers={"Location": location})


async def form_or_json(request: web.Request, *, stringify_json: bool = False) -> dict[str, str]:
    """The string fields of a form or of a JSON object body ({} for any other JSON). A JSON
    body's other values are left out, or with `stringify_json` turned into strings."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        if stringify_json:
            return {k: str(v) for k, v in data.items()}
        return {k: v for k, v in data.items() if isinstance(v, str)}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}
