"""The demo PMS's parts that are not for staff: the guest's booking page and the JSON API.

- `/guest/booking/<id>/<secret>`: the page a guest reaches from the confirmation e-mail,
  without any login; the secret in the link is the only key. Like many real PMSs (Django's
  `sessionid`) the guest area keeps its own session in the *same cookie name* as the staff
  back office (`PMSSESSID`, path `/guest/`), so a gateway in front must pass it through.
- `/api/v1/...`: a token-authenticated JSON API (`Authorization: Token <api_token>`), as
  used by a channel manager: read availability and reservations, push a booking's status.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

GUEST_COOKIE = "PMSSESSID"  # deliberately the staff session cookie's name
API_TOKEN = "demo-channel-manager-token"  # what the PMS expects; the gateway injects it
_GUEST_SESSIONS = web.AppKey("demo_guest_sessions", dict)


def add_routes(app: web.Application) -> None:
    app[_GUEST_SESSIONS] = {}
    app.router.add_get(r"/guest/booking/{id:\d+}/{secret}", guest_booking)
    app.router.add_post(r"/guest/booking/{id:\d+}/{secret}", guest_booking)
    app.router.add_get("/api/v1/availability", api_availability)
    app.router.add_get("/api/v1/reservations", api_reservations)
    app.router.add_post(r"/api/v1/reservations/{id:\d+}/status", api_set_status)


def _state(request: web.Request):
    from gateway.demo.app import STATE

    return request.app[STATE]


async def guest_booking(request: web.Request) -> web.Response:
    reservation = _state(request).reservations.get(int(request.match_info["id"]))
    if reservation is None or not hmac.compare_digest(request.match_info["secret"], reservation.guest_secret):
        return web.Response(status=404, text="No such booking.", content_type="text/plain")
    sessions = request.app[_GUEST_SESSIONS]
    guest_id = request.cookies.get(GUEST_COOKIE)
    returning = guest_id in sessions
    # Like real booking engines, a signed-in staff member sees the page with staff tools:
    # what a gateway must never cause by sending a vaulted staff cookie to a guest page.
    staff = _state(request).sessions.get(guest_id or "")
    response = web.Response(content_type="text/html", text=(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Your booking</title>"
        "<link rel=\"stylesheet\" href=\"/static/pms.css\"></head><body>"
        f"<h1>Your booking {reservation.id}</h1>"
        f"<p id=\"guest\">Dear {_escape(reservation.guest_name)},</p>"
        f"<p>Arrival <b id=\"arrival\">{reservation.arrival:%d/%m/%Y}</b>, "
        f"departure <b>{reservation.departure:%d/%m/%Y}</b>, room {reservation.room}, "
        f"status <b id=\"status\">{reservation.status}</b>.</p>"
        f"<p id=\"visit\">{'Welcome back.' if returning else 'First visit.'}</p>"
        + (f"<p id=\"staff\">Staff view: {_escape(staff.user)}</p>" if staff is not None else "")
        + "<form method=\"post\" action=\"\"><label>Note for the hotel <input name=\"note\"></label>"
        "<button>Send</button></form>"
        "</body></html>"
    ))
    if not returning and staff is None:
        guest_id = "guest-" + secrets.token_urlsafe(16)
        sessions[guest_id] = reservation.id
        response.set_cookie(GUEST_COOKIE, guest_id, path="/guest/", httponly=True, samesite="Lax")
    return response


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _api_authorised(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme == "Token" and hmac.compare_digest(token.strip(), API_TOKEN)


def _unauthorised() -> web.Response:
    return web.json_response({"detail": "Invalid token."}, status=401)


async def api_availability(request: web.Request) -> web.Response:
    if not _api_authorised(request):
        return _unauthorised()
    state = _state(request)
    return web.json_response({
        "rooms": state.room_count,
        "occupied": {day.isoformat(): count for day, count in state.occupancy()},
    })


async def api_reservations(request: web.Request) -> web.Response:
    if not _api_authorised(request):
        return _unauthorised()
    return web.json_response([
        {"id": r.id, "arrival": r.arrival.isoformat(), "departure": r.departure.isoformat(),
         "room": r.room, "status": r.status}
        for r in _state(request).reservations.values()
    ])


async def api_set_status(request: web.Request) -> web.Response:
    if not _api_authorised(request):
        return _unauthorised()
    reservation = _state(request).reservations.get(int(request.match_info["id"]))
    if reservation is None:
        return web.json_response({"detail": "Not found."}, status=404)
    body = await request.json()
    status = body.get("status") if isinstance(body, dict) else None
    if status not in ("New", "Confirmed", "Cancelled"):
        return web.json_response({"detail": "status must be New, Confirmed or Cancelled"}, status=400)
    reservation.status = status
    return web.json_response({"id": reservation.id, "status": reservation.status})
