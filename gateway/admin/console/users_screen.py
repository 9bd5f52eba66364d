"""Staff users: groups, factors, active flag, lockout; invite (code and expiry shown),
deactivate (sessions end at once), activate, reset 2FA (second factor asked again), lift a
lockout. All `manage_users`, through the same UserDirectory the login uses."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.console import auth
from gateway.admin.console.render import CONSOLE, Screen, Table, nav, page_of, render, screen_response
from gateway.auth.users import UnknownUserError
from gateway.pages.render import see_other

ACTIONS = ("invite", "deactivate", "activate", "reset-2fa", "unlock")


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    q = request.query
    users = await console.users.list()
    if q.get("user"):
        users = [u for u in users if q["user"].strip().lower() in u.name]
    shown, has_next = page_of(request, users)
    locked = {u.name: await console.lockouts.locked(u.name) for u in shown}
    yes = "✓"
    screen = Screen("users", filters=[{"name": "user", "label": "col.user"}], has_next=has_next,
                    notice=q.get("done") and f"done.{q['done']}" if q.get("done") in ACTIONS else None,
                    forms=[{"id": "invite", "action": "/users/invite", "title": "action.invite",
                            "fields": [{"name": "user", "label": "col.user", "required": True}], "submit": "action.invite"}])
    screen.table = Table(["user", "group", "factors", "active", "locked"], [
        {"user": {"text": u.name, "href": f"/logins?user={u.name}"}, "group": u.group or "",
         "factors": " + ".join(f for f, has in (("TOTP", u.has_totp), ("WebAuthn", u.has_security_key)) if has),
         "active": yes if u.active else {"text": "✗", "flag": True},
         "locked": {"text": "⚠", "flag": True} if locked[u.name] else ""}
        for u in shown
    ], [[a for a in (
        {"action": "/users/deactivate", "label": "action.deactivate", "fields": {"user": u.name}, "danger": True}
        if u.active else {"action": "/users/activate", "label": "action.activate", "fields": {"user": u.name}},
        {"action": "/users/reset-2fa", "label": "action.reset_2fa", "fields": {"user": u.name}, "code": True,
         "danger": True} if u.has_second_factor else None,
        {"action": "/users/unlock", "label": "action.unlock", "fields": {"user": u.name}} if locked[u.name] else None,
    ) if a] for u in shown])
    return screen_response(request, screen, nav(request))


async def act(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound()
    form = await auth.checked_form(console, request)
    await auth.require(console, request, "manage_users")
    try:
        user = console.users.normalise(form.get("user", ""))
    except ValueError:
        return see_other("/users")
    ids = {"user": user}
    try:
        if action == "invite":
            invite = await console.users.issue_invite(user)
            await auth.audit(console, request, "user_invited", permission="manage_users", identifiers=ids)
            return render(request, "message.html", title="done.invite_title", text="done.invite",
                          values={"user": user, "until": console.time().show(invite.expires_at)},
                          secret_text=invite.code, back="/users", **nav(request))
        if action == "deactivate":
            await console.users.set_active(user, False)
            ended = await console.sessions.end_user(user, "deactivated")
            await auth.audit(console, request, "user_deactivated", permission="manage_users", identifiers=ids, ended=ended)
        elif action == "activate":
            await console.users.set_active(user, True)
            await auth.audit(console, request, "user_activated", permission="manage_users", identifiers=ids)
        elif action == "reset-2fa":
            await auth.step_up(console, request, form, "manage_users")
            removed = await console.users.remove_factors(user)
            await auth.audit(console, request, "user_2fa_reset", permission="manage_users", identifiers=ids,
                             removed=removed, step_up=True)
        else:
            await console.lockouts.lift_user(user)
            await auth.audit(console, request, "user_unlocked", permission="manage_users", identifiers=ids)
    except UnknownUserError:
        return see_other("/users")
    return see_other(f"/users?done={action}")
