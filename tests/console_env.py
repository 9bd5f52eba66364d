"""The console on a real gateway (tests/login_env.py: every addon, the demo PMS), with
operators made as `pms-gateway operators add` makes them and an HTTP client that signs in."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pyotp

from gateway.admin.listener import admin_app
from gateway.admin.metrics import Metrics
from gateway.admin.operators import OperatorDirectory
from tests.harness import serve_app
from tests.login_env import LoginEnv, login_env

PASSWORD = "correct horse battery"


@dataclass
class ConsoleEnv:
    url: str
    env: LoginEnv
    operators: OperatorDirectory
    secrets: dict[str, str]

    async def operator(self, name: str, permissions: str) -> str:
        """Add and enroll an operator (as the CLI and /enroll do); returns its TOTP secret."""
        _, code = await self.operators.add(name, permissions)
        secret = pyotp.random_base32()
        assert await self.operators.enroll(name, code, PASSWORD, secret, pyotp.TOTP(secret).at(self.env.clock()))
        self.secrets[name] = secret
        return secret

    def code(self, name: str) -> str:
        self.env.clock.advance(30)  # each time step counts once
        return pyotp.TOTP(self.secrets[name]).at(self.env.clock())


@contextlib.asynccontextmanager
async def console_env(tmp_path, **kwargs) -> AsyncIterator[ConsoleEnv]:
    async with login_env(tmp_path, **kwargs) as env:
        app = admin_app(env.services, Metrics(), host="127.0.0.1", clock=env.clock)
        async with serve_app(app) as url:
            yield ConsoleEnv(url, env, OperatorDirectory(
                env.services.database, env.services.keyring, env.services.store, clock=env.clock), {})


class ConsoleClient:
    def __init__(self, console: ConsoleEnv) -> None:
        self.console = console
        self.client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.client.close()

    async def get(self, path: str, **kwargs) -> tuple[int, dict, str]:
        async with self.client.get(self.console.url + path, allow_redirects=False, **kwargs) as response:
            text = await response.text()
            found = re.search(r'name="csrf" value="([^"]+)"', text)
            if found:
                self.csrf = found.group(1)
            return response.status, dict(response.headers), text

    async def post(self, path: str, data: dict, csrf: bool = True) -> tuple[int, dict, str]:
        body = {**({"csrf": self.csrf} if csrf else {}), **data}
        async with self.client.post(self.console.url + path, data=body, allow_redirects=False) as response:
            return response.status, dict(response.headers), await response.text()

    async def login(self, name: str, password: str = PASSWORD) -> int:
        await self.get("/login")
        status, headers, _ = await self.post("/login", {"name": name, "password": password,
                                                        "code": self.console.code(name)})
        await self.get("/")
        return status
