"""The gateway's own error answers: a page for people, JSON for scripts, always a request id."""

from __future__ import annotations

from aiohttp import web

from gateway.pages.render import choose_language, render_page, translator, wants_json

_KEYS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    421: "bad_request",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


def error_response(
    request: web.BaseRequest,
    status: int,
    request_id: str,
    property_name: str,
    *,
    key: str | None = None,
    detail: str | None = None,
    values: dict[str, str] | None = None,
) -> web.Response:
    """An error answer. `key` names its title in messages.json (`key + "_text"` its
    sentence, formatted with `values`), so a person reads it in their own language.
    `detail` is a short fixed technical reason (shown as is, in English), never an echo of
    the request: refusals a person should understand get a key of their own instead."""
    key = key or _KEYS.get(status, "bad_request")
    values = values or {}
    headers = {"X-Request-Id": request_id}
    if wants_json(request):
        # The same title and sentence as the page, in the client's language (a script
        # shows `message` to its user as it is).
        lang = choose_language(request.headers.get("Accept-Language"))
        t = translator(lang)
        body = {"error": key, "title": t(key), "message": t(key + "_text", **values), "lang": lang,
                "request_id": request_id, **values}
        if detail:
            body["detail"] = detail
        return web.json_response(body, status=status, headers=headers)
    return render_page(
        request,
        "error.html",
        status=status,
        property_name=property_name,
        headers=headers,
        title_key=key,
        message_key=key + "_text",
        request_id=request_id,
        detail=detail,
        values=values,
    )
