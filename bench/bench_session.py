"""Signing a bench user in through the gateway for real, as a browser does.

The measured gateway rows are requests of a signed-in staff member: the session cookie
and the device cookie this sign-in earns are what wrk sends. The steps are the ones a new
member of staff takes: `pms-gateway users invite NAME --create` (the operator's command,
run against the gateway's own config), the PMS's password form through the gateway, then
the gateway's second factor: the invite code, a TOTP authenticator enrolled from the
secret the page shows (pyotp plays the phone), a first code, and on to the PMS.
Before anything is measured, `refuses_anonymous` checks that the same page without the
cookies is not served: the gateway rows really pay for a session lookup.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

SECRET = re.compile(r'<p class="secret" id="secret">([A-Z2-7]+)</p>')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class SignInError(RuntimeError):
    """A step of the sign-in did not answer as a working gateway does (the step is named)."""


def start_invite(command: list[str], config: Path, user: str, cwd: Path) -> subprocess.Popen:
    """`pms-gateway users invite USER --create` started (it needs the database, not the gateway)."""
    return subprocess.Popen([*command, "users", "invite", user, "--create", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def invite_code(proc: subprocess.Popen, user: str) -> str:
    """The one-time invite code the command started by start_invite printed."""
    stdout, stderr = proc.communicate(timeout=60)
    match = re.search(rf"Invite for {re.escape(user)} \(group [^)]*\): (\S+)", stdout)
    if proc.returncode != 0 or not match:
        raise SignInError(f"`users invite {user}` failed ({proc.returncode}): {(stderr or stdout).strip()[-300:]}")
    return match.group(1)


def sign_in(base_url: str, user: str, password: str, invite_code: str) -> str:
    """Sign `user` in through the gateway at `base_url`; returns the Cookie header value
    the browser would send from then on (gateway session and device cookies)."""
    return asyncio.run(_sign_in(base_url, user, password, invite_code))


async def _sign_in(base_url: str, user: str, password: str, invite_code: str) -> str:
    import aiohttp
    import pyotp

    headers = {"Sec-Fetch-Site": "same-origin", "Origin": base_url}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=headers) as client:

        async def call(step: str, method: str, path: str, expect: tuple[int, ...], **kwargs) -> tuple[dict, str]:
            async with client.request(method, base_url + path, allow_redirects=False, **kwargs) as response:
                text = await response.text()
                if response.status not in expect:
                    raise SignInError(f"{step}: HTTP {response.status} from {method} {path} "
                                      f"(expected {expect}): {text[:200]!r}")
                return dict(response.headers), text

        async def second_factor(step: str, expect: tuple[int, ...], **fields: str) -> tuple[dict, str]:
            _, page = await call(f"{step} (form)", "GET", "/_gateway/2fa", (200,))
            csrf = CSRF.search(page)
            if not csrf:
                raise SignInError(f"{step}: no CSRF token on the second-factor page")
            return await call(step, "POST", "/_gateway/2fa", expect, data={"csrf": csrf.group(1), **fields})

        await call("login form", "GET", "/login", (200,))
        answer, _ = await call("password", "POST", "/login", (302, 303),
                               data={"username": user, "password": password})
        if answer.get("Location") != "/_gateway/2fa":
            raise SignInError(f"password: redirected to {answer.get('Location')!r}, not to the second factor")
        _, page = await second_factor("invite code", (200,), action="invite", invite_code=invite_code)
        secret = SECRET.search(page)
        if not secret:
            raise SignInError("invite code: the enrollment page shows no authenticator secret")
        totp = pyotp.TOTP(secret.group(1))
        await second_factor("first code", (200,), action="enroll", code=totp.at(time.time()))
        await second_factor("continue", (302, 303), action="continue")
        cookies = {cookie.key: cookie.value for cookie in jar}
    if not any("session" in name for name in cookies):
        raise SignInError(f"signed in, but the gateway set no session cookie (cookies: {sorted(cookies)})")
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def refuses_anonymous(url: str, cookie: str) -> str | None:
    """None when `url` answers 200 with `cookie` and is refused or redirected without it;
    otherwise what is wrong, in one line."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def status(headers: dict) -> int:
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    signed_in, anonymous = status({"Cookie": cookie}), status({})
    if signed_in != 200:
        return f"{url} answered {signed_in} to the signed-in user"
    if anonymous == 200:
        return f"{url} answered 200 without a session: the gateway rows would not measure a session lookup"
    return None
