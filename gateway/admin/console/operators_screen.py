"""Operators: list; add (the second factor asked again; the enrollment code shown once)
and remove, with `console_admin`. The first operator is made on the host only."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.console import auth
from gateway.admin.console.render import CONSOLE, Screen, Table, nav, render, screen_response
from gateway.admin.operators import PERMISSIONS, OperatorRefused
from gateway.pages.render import see_other


async def page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    console = request.app[CONSOLE]
    operators = await console.operators.list()
    screen = Screen("operators", error=error, notice=request.query.get("done") and "done.operator_removed", forms=[
        {"id": "add", "action": "/operators/add", "title": "action.add_operator", "submit": "action.add_operator",
         "fields": [{"name": "name", "label": "field.name", "required": True},
                    {"name": "permissions", "label": "col.permissions", "type": "checkboxes", "options": PERMISSIONS},
                    {"name": "code", "label": "field.totp_again", "required": True}]}])
    screen.table = Table(["operator", "permissions", "enrolled"], [
        {"operator": o.name, "permissions": ", ".join(o.permissions), "enrolled": "✓" if o.enrolled else ""}
        for o in operators
    ], [[{"action": "/operators/remove", "label": "action.remove", "fields": {"name": o.name}, "danger": True}]
        for o in operators])
    return screen_response(request, screen, nav(request), status=status)


async def act(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    action = request.match_info["action"]
    form = await auth.checked_form(console, request)
    await auth.require(console, request, "console_admin")
    name = form.get("name", "")
    try:
        if action == "add":
            await auth.step_up(console, request, form, "console_admin")
            permissions = (await request.post()).getall("permissions", [])
            operator, code = await console.operators.add(name, [p for p in permissions if isinstance(p, str)])
            await auth.audit(console, request, "operator_added", permission="console_admin", step_up=True,
                             identifiers={"operator": operator.name}, permissions=list(operator.permissions))
            return render(request, "message.html", title="done.operator_title", text="done.operator",
                          values={"user": operator.name, "until": console.time().show(operator.enroll_expires_at)},
                          secret_text=code, back="/operators", **nav(request))
        if action != "remove":
            raise web.HTTPNotFound()
        await console.operators.remove(name)
        await auth.audit(console, request, "operator_removed", permission="console_admin", identifiers={"operator": name})
    except OperatorRefused:
        return await page(request, error="error.operator_refused", status=400)
    return see_other("/operators?done=1")
