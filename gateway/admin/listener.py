"""The operator's listener (loopback by default): the console, health, and metrics.

Separate from the staff-facing port so that monitoring never needs a session and the
console never faces the hotel's staff network unless bound there on purpose (then with
TLS, and `/metrics` asks for the bearer token `admin.metrics_token`).
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl

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
    token = request.app[METRICS_TOKEN]
    if token is not False:  # off loopback: a bearer token, or nothing at all
        given = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.Response(status=401, text="bearer token required", headers={"WWW-Authenticate": "Bearer"})
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


METRICS_TOKEN = web.AppKey("metrics_token", object)  # False on loopback, else the token (None: refuse)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_app(services, metrics_addon: Metrics, *, host: str, metrics_token: str | None = None,
              tls: bool = False, clock=None) -> web.Application:
    from gateway.admin.console.app import add_console

    app = web.Application()
    app[SERVICES] = services
    app[METRICS] = metrics_addon
    app[METRICS_TOKEN] = False if is_loopback(host) else metrics_token
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    add_console(app, services, tls=tls, **({"clock": clock} if clock else {}))
    return app


async def start_admin(host: str, port: int, services, metrics_addon: Metrics) -> web.AppRunner:
    settings = services.config.admin
    context = None
    if settings.tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    app = admin_app(services, metrics_addon, host=host, metrics_token=settings.metrics_token, tls=context is not None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner
