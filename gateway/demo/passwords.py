"""The demo PMS's other password forms, shaped like a real PMS's:

- `/reservations/<id>/erase`: the staff member's password asked again before a guest's
  personal data is erased (GDPR erasure); a wrong one is answered 200 with the form;
- `/account/password`: change one's own password (`old_password`, `new_password`,
  `new_password2`); the user's other PMS sessions end, as Django's does;
- `/password/forgot` -> e-mail with `/password/reset/<token>` -> a new password. Like
  many PMSs, a successful reset signs the user straight in (a new PMSSESSID): the gateway
  in front must strip that. The e-mail goes over plain SMTP to the configured smarthost
  (`DemoSettings.smtp_host`/`smtp_port`: the gateway's SMTP relay in the tests).

Kept old-fashioned like the rest of the demo: answers with 200 on errors, 302 on success.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from email.message import EmailMessage

from aiohttp import web

from gateway.demo.app import (
    SESSION_COOKIE,
    SETTINGS,
    STATE,
    _csrf_failure,
    _field,
    _require_session,
    _reservation,
    _session_csrf_ok,
    redirect,
    render,
)
from gateway.demo.confirmations import send_email
from gateway.demo.state import StaffAccount, hash_password

RESET_TOKENS = web.AppKey("demo_reset_tokens", dict)  # token -> (user, expiry)
RESET_VALID_FOR = 3600.0
MIN_PASSWORD = 8
MAIL_DOMAIN = "hotel-demo.example"


def add_routes(app: web.Application) -> None:
    app[RESET_TOKENS] = {}
    app.router.add_get(r"/reservations/{id:\d+}/erase", erase_form)
    app.router.add_post(r"/reservations/{id:\d+}/erase", erase_submit)
    app.router.add_get("/account/password", change_form)
    app.router.add_post("/account/password", change_submit)
    app.router.add_get("/password/forgot", forgot_form)
    app.router.add_post("/password/forgot", forgot_submit)
    app.router.add_get("/password/reset", reset_by_query)
    app.router.add_get("/password/reset/{token}", reset_form)
    app.router.add_post("/password/reset/{token}", reset_submit)


def staff_email(user: str) -> str:
    return f"{user}@{MAIL_DOMAIN}"


def _set_password(request: web.Request, user: str, password: str) -> None:
    state = request.app[STATE]
    account = state.accounts[user]
    salt = secrets.token_bytes(16)
    state.accounts[user] = StaffAccount(account.name, account.role, salt, hash_password(password, salt))


def _close_sessions(request: web.Request, user: str, keep: str | None = None) -> None:
    state = request.app[STATE]
    for sessid, session in list(state.sessions.items()):
        if session.user == user and sessid != keep:
            state.close_session(sessid)


def _new_password_problem(form) -> str | None:
    new, again = _field(form, "new_password"), _field(form, "new_password2")
    if len(new) < MIN_PASSWORD:
        return f"The new password needs at least {MIN_PASSWORD} characters."
    if new != again:
        return "The two new passwords differ."
    return None


# --- re-authentication before erasing a guest's data ------------------------------------


async def erase_form(request: web.Request) -> web.Response:
    session = _require_session(request)
    return render(request, "erase.html", session, r=_reservation(request), error="")


async def erase_submit(request: web.Request) -> web.Response:
    session = _require_session(request)
    if not await _session_csrf_ok(request, session):
        return _csrf_failure(request, session)
    reservation = _reservation(request)
    account = request.app[STATE].accounts[session.user]
    if not account.check_password(_field(await request.post(), "password")):
        return render(request, "erase.html", session, r=reservation, error="Wrong password: nothing was erased.")
    request.app[STATE].reservations[reservation.id] = dataclasses.replace(
        reservation, guest_name="Erased guest", email="", phone="", card_number="", passport_number="",
        date_of_birth=dt.date(1900, 1, 1), notes=f"Personal data erased by {session.user}.",
    )
    return redirect(f"/reservations/{reservation.id}")


# --- changing one's own password -------------------------------------------------------


async def change_form(request: web.Request) -> web.Response:
    session = _require_session(request)
    return render(request, "password_change.html", session, error="")


async def change_submit(request: web.Request) -> web.Response:
    session = _require_session(request)
    if not await _session_csrf_ok(request, session):
        return _csrf_failure(request, session)
    form = await request.post()
    if not request.app[STATE].accounts[session.user].check_password(_field(form, "old_password")):
        return render(request, "password_change.html", session, error="The current password is wrong.")
    if problem := _new_password_problem(form):
        return render(request, "password_change.html", session, error=problem)
    _set_password(request, session.user, _field(form, "new_password"))
    _close_sessions(request, session.user, keep=session.sessid)
    return redirect("/reservations?password=changed")


# --- reset by e-mailed link --------------------------------------------------------------


async def forgot_form(request: web.Request) -> web.Response:
    return render(request, "password_forgot.html", None, sent=False)


async def forgot_submit(request: web.Request) -> web.Response:
    user = _field(await request.post(), "username").strip().lower()
    if user in request.app[STATE].accounts:
        token = secrets.token_urlsafe(32)
        request.app[RESET_TOKENS][token] = (user, request.app[STATE].clock() + RESET_VALID_FOR)
        await send_email(_reset_email(request, user, token), request.app[SETTINGS])
    # The same answer whether the account exists or not (no user enumeration).
    return render(request, "password_forgot.html", None, sent=True)


def _reset_email(request: web.Request, user: str, token: str) -> EmailMessage:
    settings = request.app[SETTINGS]
    link = f"{settings.public_url.rstrip('/')}/password/reset/{token}"
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = staff_email(user)
    message["Subject"] = f"{settings.property_name} PMS: choose a new password"
    message.set_content(
        f"Hello {user},\n\nsomeone asked to reset your PMS password. To choose a new one, open\n\n"
        f"{link}\n\nwithin the hour. If it was not you, ignore this e-mail.\n"
    )
    return message


def _reset_user(request: web.Request) -> str | None:
    entry = request.app[RESET_TOKENS].get(request.match_info["token"])
    if entry is None or entry[1] < request.app[STATE].clock():
        return None
    return entry[0]


async def reset_by_query(request: web.Request) -> web.Response:
    """`/password/reset?token=...`: the link form of older e-mails (a secret in the query
    string, as many PMSs send it), sent on to the form at `/password/reset/<token>`."""
    token = request.query.get("token", "")
    if not token or "/" in token:
        raise web.HTTPNotFound()
    return redirect(f"/password/reset/{token}")


async def reset_form(request: web.Request) -> web.Response:
    user = _reset_user(request)
    error = "" if user else "This link is invalid or has expired."
    return render(request, "password_reset.html", None, valid=bool(user), user=user or "",
                  token=request.match_info["token"], error=error)


async def reset_submit(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    user = _reset_user(request)
    if user is None:
        return render(request, "password_reset.html", None, valid=False, user="", token=token,
                      error="This link is invalid or has expired.")
    form = await request.post()
    if problem := _new_password_problem(form):
        return render(request, "password_reset.html", None, valid=True, user=user, token=token, error=problem)
    del request.app[RESET_TOKENS][token]
    state = request.app[STATE]
    _set_password(request, user, _field(form, "new_password"))
    _close_sessions(request, user)
    session = state.open_session(state.accounts[user])  # signed straight in, as many PMSs do
    response = redirect("/reservations")
    response.set_cookie(SESSION_COOKIE, session.sessid, path="/", httponly=True)
    return response
