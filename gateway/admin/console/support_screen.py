"""Vendor support access: grants (who, for whom, why, until when), grant (the second factor
asked again) and revoke, with `support_access`, through `gateway.auth.support`."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.console import auth
from gateway.admin.console.render import CONSOLE, OPERATOR, Screen, Table, nav, render, screen_response
from gateway.auth.support import SupportRefused
from gateway.pages.render import see_other
from gateway.policy.durations import parse_duration


async def page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    console = request.app[CONSOLE]
    clock = console.time()
    grants = await console.support.list()
    now = console.support._now()
    accounts = console.policy().support.accounts
    screen = Screen("support", error=error, notice=request.query.get("done") and "done.support_revoked", forms=[
        {"id": "grant", "action": "/support/grant", "title": "action.grant", "submit": "action.grant", "fields": [
            {"name": "account", "label": "col.account", "type": "select", "options": accounts},
            {"name": "valid_for", "label": "field.valid_for", "required": True},
            {"name": "reason", "label": "field.reason", "required": True},
            {"name": "code", "label": "field.totp_again", "required": True}]}])
    screen.table = Table(["account", "state", "granted_by", "granted", "expires", "used", "reason"], [
        {"account": g.account, "state": g.state(now), "granted_by": g.operator, "granted": clock.show(g.created_at),
         "expires": clock.show(g.expires_at), "used": clock.show(g.used_at), "reason": g.reason or ""}
        for g in grants
    ], [[{"action": "/support/revoke", "label": "action.revoke", "fields": {"account": g.account}, "danger": True}]
        if g.state(now) in ("valid", "used") else [] for g in grants])
    return screen_response(request, screen, nav(request), status=status)


async def act(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    action = request.match_info["action"]
    form = await auth.checked_form(console, request)
    await auth.require(console, request, "support_access")
    operator = f"console:{request[OPERATOR].name}"
    account = form.get("account", "")
    if action == "grant":
        await auth.step_up(console, request, form, "support_access")
        try:
            grant, code = await console.support.grant(account, operator=operator,
                                                      valid_for=parse_duration(form.get("valid_for", "")),
                                                      reason=form.get("reason"))
        except (SupportRefused, ValueError):
            return await page(request, error="error.support_refused", status=400)
        await auth.audit(console, request, "support_granted", permission="support_access",
                         identifiers={"user": grant.account}, reason=grant.reason, step_up=True)
        return render(request, "message.html", title="done.support_title", text="done.support",
                      values={"user": grant.account, "until": console.time().show(grant.expires_at)},
                      secret_text=code, back="/support", **nav(request))
    if action != "revoke":
        raise web.HTTPNotFound()
    try:
        revoked = await console.support.revoke(account, operator=operator)
    except SupportRefused:
        return await page(request, error="error.support_refused", status=400)
    ended = await console.sessions.end_user(console.users.normalise(account), "revoked")
    await auth.audit(console, request, "support_revoked", permission="support_access",
                     identifiers={"user": account}, revoked=revoked, ended=ended)
    return see_other("/support?done=1")
