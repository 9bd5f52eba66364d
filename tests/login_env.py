"""A real gateway (every addon) in front of the real demo PMS, with a clock tests can move."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pyotp
import pytest

from gateway.assembly import Services, build_addons, open_services
from gateway.config import Config
from gateway.demo import DemoSettings, create_app
from gateway.policy import load_policy
from gateway.policy.reload import PolicyHolder
from gateway.policy.schema import Policy
from gateway.runtime import start_gateway
from tests.harness import free_port, gateway_config, serve_app

DEMO_PASSWORDS = {"alice": "alice-demo-pw", "bob": "bob-demo-pw", "manager": "manager-demo-pw"}


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LoginEnv:
    url: str
    pms_url: str
    config: Config
    policy: PolicyHolder
    services: Services
    clock: FakeClock
    addons: list
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def sessions(self):
        from gateway.sessions.guard import SessionGuard

        return next(a for a in self.addons if isinstance(a, SessionGuard)).sessions

    async def pms_sessions(self) -> list[dict]:
        async with aiohttp.ClientSession() as client:
            async with client.get(self.pms_url + "/_demo/sessions") as response:
                return await response.json()

    async def pms_users_alive(self) -> list[str]:
        return sorted(s["user"] for s in await self.pms_sessions())

    def code(self, user: str, offset_steps: int = 0) -> str:
        return pyotp.TOTP(self.secrets[user]).at(self.clock() + 30 * offset_steps)


def store_url_for(kind: str, redis_url: str | None) -> str:
    if kind == "memory":
        return "memory://"
    return f"{redis_url}?prefix=gwtest-{uuid.uuid4().hex[:12]}:"


@contextlib.asynccontextmanager
async def login_env(
    tmp_path,
    store_url: str = "memory://",
    policy: Policy | None = None,
    pms_url: str | None = None,
    config_overrides: dict[str, str] | None = None,
) -> AsyncIterator[LoginEnv]:
    """`tmp_path` holds the key file and database: two envs on one tmp_path are two workers."""
    async with contextlib.AsyncExitStack() as stack:
        if pms_url is None:
            pms_url = await stack.enter_async_context(serve_app(create_app(DemoSettings())))
        port = free_port()
        settings = {
            "data_dir": str(tmp_path / "var"), "store_url": store_url,
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", **(config_overrides or {}),
        }
        config = gateway_config(pms_url, port, **settings)
        holder = PolicyHolder([], policy or load_policy("policies/default.yaml"))
        clock = FakeClock()
        services = await open_services(config, holder, clock)
        addons, cleanups = await build_addons(config, holder, services, clock)
        running = await start_gateway(config, holder, addons)
        running.cleanups.extend(cleanups)
        try:
            yield LoginEnv(f"http://127.0.0.1:{running.port}", pms_url, config, holder, services, clock, addons)
        finally:
            await running.stop()


class Browser:
    """A cookie-keeping HTTP client that behaves like a browser on the gateway's origin."""

    def __init__(self, env: LoginEnv) -> None:
        self.env = env
        self.client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.set_cookies: list[str] = []  # every Set-Cookie the browser ever received

    async def close(self) -> None:
        await self.client.close()

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, dict, str]:
        headers = kwargs.pop("headers", {})
        if not {"origin", "referer", "sec-fetch-site"} & {name.lower() for name in headers}:
            headers["Sec-Fetch-Site"] = "same-origin"  # as a browser says of its own pages' requests
        if method != "GET":
            headers.setdefault("Origin", self.env.url)
        async with self.client.request(
            method, self.env.url + path, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            self.set_cookies += response.headers.getall("Set-Cookie", [])
            return response.status, dict(response.headers), await response.text()

    def cookie(self, name: str) -> str | None:
        for cookie in self.client.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None

    async def password(self, user: str, password: str | None = None, extra: str = "") -> tuple[int, dict, str]:
        status, _, page = await self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        body = f"username={user}&password={password or DEMO_PASSWORDS[user.strip().lower()]}&csrf_token={token}{extra}"
        return await self.request(
            "POST", "/login", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )

    async def challenge_form(self) -> tuple[str, str]:
        status, _, page = await self.request("GET", "/_gateway/2fa")
        assert status == 200, page
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1), page

    async def submit(self, **fields: str) -> tuple[int, dict, str]:
        csrf, _ = await self.challenge_form()
        return await self.request("POST", "/_gateway/2fa", data={"csrf": csrf, **fields})

    async def enroll(self, user: str) -> list[str]:
        """Invite code -> QR page -> first code -> recovery codes -> continue; returns the codes."""
        invite = await self.env.services.users.create_invite(user)
        status, _, page = await self.submit(action="invite", invite_code=invite)
        assert status == 200 and "<svg" in page, page
        secret = re.search(r'<p class="secret" id="secret">([A-Z2-7]+)</p>', page).group(1)
        self.env.secrets[user] = secret
        status, _, page = await self.submit(action="enroll", code=self.env.code(user))
        assert status == 200, page
        codes = re.findall(r"<li>([^<]+)</li>", page)
        status, headers, _ = await self.submit(action="continue")
        assert status in (302, 303), status
        return codes

    async def login(self, user: str) -> tuple[int, dict, str]:
        """Full login of an enrolled user: password then a fresh TOTP code."""
        status, headers, _ = await self.password(user)
        assert headers.get("Location") == "/_gateway/2fa", (status, headers)
        self.env.clock.advance(30)  # a new time step: the last code may not be reused
        return await self.submit(action="verify", code=self.env.code(user))


class ForwardedBrowser(Browser):
    """A browser at `ip`, its requests reaching the gateway through a trusted proxy's
    X-Forwarded-For (None: no header, the gateway's own peer 127.0.0.1, inside hotel_lan)."""

    def __init__(self, env: LoginEnv, ip: str | None) -> None:
        super().__init__(env)
        self.ip = ip

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, dict, str]:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.ip is not None:
            headers.setdefault("X-Forwarded-For", self.ip)
        return await super().request(method, path, headers=headers, **kwargs)


async def signed_in_without_csrf(env: LoginEnv, user: str = "alice") -> Browser:
    """Password posted to /login with no CSRF token (the naive PMS's form has none; its
    passwords are the demo's), then an enrolled second factor."""
    browser = Browser(env)
    status, headers, _ = await browser.request(
        "POST", "/login", data=f"username={user}&password={DEMO_PASSWORDS[user]}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert headers.get("Location") == "/_gateway/2fa", (status, headers)
    await browser.enroll(user)
    return browser


# Fixtures for the HTTP-level login tests: import them into the test module.


@pytest.fixture(params=["memory", "redis"])
async def env(request, tmp_path):
    """A login environment on the in-memory store, then on Redis."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with login_env(tmp_path, store_url_for(request.param, redis_url)) as environment:
        yield environment


@pytest.fixture
async def browser(env):
    b = Browser(env)
    yield b
    await b.close()
