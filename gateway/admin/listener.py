"""The operator's listener (loopback by default): health with store checks, and metrics.

Separate from the staff-facing port so that monitoring never needs a session and the
metrics never face the hotel's network.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.admin.metrics import Metrics

SERVICES = web.AppKey("services", object)
METRICS = web.AppKey("metrics", Metrics)


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks = {"store": await services.store.ping()}
    try:
        async with services.database.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    healthy = all(checks.values())
    return web.json_response({"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_admin(host: str, port: int, services, metrics_addon: Metrics) -> web.AppRunner:
    app = web.Application()
    app[SERVICES] = services
    app[METRICS] = metrics_addon
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
