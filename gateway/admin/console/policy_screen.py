"""The policy: the files it was loaded from, the effective settings per group (sessions,
networks, access), the last reload and the error that kept the previous policy."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.admin.console.render import CONSOLE, nav, render


async def page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    holder, policy, clock = console.services.policy, console.policy(), console.time()
    groups = {}
    for name, group in {**policy.groups, **({} if policy.default_group in policy.groups or policy.default_group is None
                                             else {policy.default_group: None})}.items():
        sessions = policy.sessions_for(name).model_dump(mode="json", exclude={"idle_ignore_paths"})
        groups[name] = json.dumps({
            "members": [str(m) for m in group.members] if group else [],
            "networks": [str(n) for n in group.networks] if group else [],
            "sessions": sessions,
            "access": group.access.model_dump(mode="json") if group else {},
        }, indent=2, ensure_ascii=False)
    files = [str(f) for f in getattr(holder, "_files", lambda: [])()] or [str(p) for p in getattr(holder, "paths", [])]
    return render(request, "policy.html", files=files, groups=groups, default_group=policy.default_group,
                  loaded_at=clock.show(getattr(holder, "loaded_at", None), seconds=True),
                  checked_at=clock.show(getattr(holder, "checked_at", None), seconds=True),
                  rejection=getattr(holder, "last_rejection", None), **nav(request))
