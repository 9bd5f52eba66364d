"""A captcha before the password reaches the PMS, when a login looks risky.

On the login request (policy `login.path` and `login.method`) the gate applies
`captcha.when`: `always`; the client address is an anonymous VPN, a Tor exit, a hosting
provider or a public proxy (GeoIP Anonymous-IP file); it lies outside the known networks
(`unknown_network`); or the user or the address already has `after_failures` failed
attempts in the lockout window. A login that needs a captcha and carries no valid pass is
not forwarded: a browser is sent (303) to `/_gateway/captcha?next=<its login page>`, a
JSON client gets 403 naming that URL. The body is read only to learn the username and is
dropped with the request: the password is never stored and never reaches the PMS.

Challenges (see `captcha_pages`) are ALTCHA proofs of work made by the `altcha` library
(v2 format, SHA-256, a server-chosen counter the browser has to find), or an image with
characters to type for browsers without JavaScript. Each is one-time and short-lived: the
ephemeral store holds it until it is used or expires, so a solution cannot be replayed.

A solved challenge earns a pass: the `gw_captcha` cookie, HMAC-signed, HttpOnly, bound to
the client IP, valid for `captcha.pass_valid_for` and for `captcha.pass_uses` login
attempts that need a captcha. The default is one attempt: after a wrong password the next
try needs a new captcha, so guessing passwords costs a proof of work per guess. Uses are
counted in the store, so every worker agrees.

A locked-out user or address is not asked for a captcha: the login interceptor answers
429 and a solved captcha would change nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import altcha
import structlog
from aiohttp import web

from gateway.pages.render import see_other, wants_json
from gateway.policy.schema import Policy
from gateway.proxy.exchange import Addon, Exchange
from gateway.readers.credentials import AmbiguousCredentials, read_login
from gateway.readers.redirects import is_local_target
from gateway.risk.geoip import GeoLocator
from gateway.risk.lockout import Lockouts
from gateway.risk.networks import KnownNetworks
from gateway.sessions.cookies import CAPTCHA_COOKIE, cookie_value
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.captcha")

CAPTCHA_PATH = "/_gateway/captcha"
PASS_COOKIE = CAPTCHA_COOKIE
ALGORITHM = "SHA-256"  # iterated SHA: what browsers compute with crypto.subtle
IMAGE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L look-alikes
IMAGE_LENGTH = 5
ISSUE_WINDOW = 300.0  # seconds
ISSUE_LIMIT = 60  # challenges one address may ask for per window (images cost CPU)

# policy flag -> GeoInfo attribute -> reason recorded on the exchange
GEO_FLAGS = (
    ("anonymous_vpn", "is_anonymous_vpn", "vpn"),
    ("tor", "is_tor", "tor"),
    ("hosting_provider", "is_hosting", "hosting provider"),
    ("public_proxy", "is_public_proxy", "public proxy"),
)


def _subkey(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()


class CaptchaPasses:
    """`<expires>.<nonce>.<mac>`: the mac covers expiry, nonce and the client IP."""

    def __init__(self, key: bytes, store: EphemeralStore, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.store = store
        self.clock = clock

    def _mac(self, expires: int, nonce: str, ip: str) -> str:
        return hmac.new(self.key, f"{expires}.{nonce}.{ip}".encode(), hashlib.sha256).hexdigest()

    def issue(self, ip: str, valid_for: float) -> str:
        expires = int(self.clock() + valid_for)
        nonce = secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{self._mac(expires, nonce, ip)}"

    async def redeem(self, token: str | None, ip: str, uses: int) -> bool:
        """True when `token` is a live pass for `ip` with a use left; counts that use."""
        if not token:
            return False
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        remaining = expires - self.clock()
        if remaining <= 0 or not hmac.compare_digest(mac, self._mac(expires, nonce, ip)):
            return False
        used = await self.store.incr(f"captcha:pass:{nonce}", ttl=remaining)
        return used <= uses


class Challenges:
    """Proof-of-work and image challenges, each valid once, kept in the ephemeral store."""

    def __init__(self, key: bytes, store: EphemeralStore, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.store = store
        self.clock = clock

    async def may_issue(self, network: str) -> bool:
        """At most ISSUE_LIMIT challenges per client network (`network_key`) and window:
        images cost CPU."""
        return await self.store.incr(f"captcha:issued:{network}", ttl=ISSUE_WINDOW) <= ISSUE_LIMIT

    async def proof_of_work(self, difficulty: int, valid_for: float) -> dict:
        """A signed ALTCHA challenge whose counter is somewhere in 0..difficulty."""
        challenge = altcha.create_challenge(
            ALGORITHM,
            1,
            counter=secrets.randbelow(difficulty + 1),
            expires_at=int(self.clock() + valid_for),
            hmac_secret=self.key,
        )
        await self.store.set(f"captcha:pow:{challenge.parameters.nonce}", b"1", ttl=valid_for)
        return challenge.to_dict()

    async def check_proof_of_work(self, payload: str) -> bool:
        """The solution is right, the challenge ours, unexpired and not used before."""
        if not payload or len(payload) > 4096:
            return False
        result = altcha.verify_solution(payload, self.key)
        if not result.verified:
            return False
        try:
            nonce = json.loads(base64.b64decode(payload))["challenge"]["parameters"]["nonce"]
        except (ValueError, KeyError, TypeError):
            return False
        # The store entry is what makes a challenge one-time: a replay finds it gone.
        return isinstance(nonce, str) and await self.store.take(f"captcha:pow:{nonce}") is not None

    async def image(self, valid_for: float) -> tuple[str, bytes]:
        """A new image challenge: its id and the PNG."""
        from captcha.image import ImageCaptcha

        text = "".join(secrets.choice(IMAGE_ALPHABET) for _ in range(IMAGE_LENGTH))
        image_id = secrets.token_urlsafe(18)
        await self.store.set(f"captcha:img:{image_id}", text.encode(), ttl=valid_for)
        png = await asyncio.to_thread(lambda: ImageCaptcha(width=240, height=80).generate(text).getvalue())
        return image_id, png

    async def check_image(self, image_id: str, answer: str) -> bool:
        """Case and spaces do not matter; right or wrong, the image is used up."""
        if not image_id or len(image_id) > 64:
            return False
        expected = await self.store.take(f"captcha:img:{image_id}")
        if expected is None:
            return False
        given = "".join(answer.split()).upper().encode()
        return hmac.compare_digest(given, expected)


class CaptchaGate(Addon):
    """Asks for a captcha on risky login requests; see the module documentation.

    It owns the GeoLocator it is given and closes it at shutdown.
    """

    def __init__(
        self,
        policy: Callable[[], Policy],
        users,
        lockouts: Lockouts,
        store: EphemeralStore,
        key: bytes,
        geo: GeoLocator,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.users = users
        self.lockouts = lockouts
        self.store = store
        self.geo = geo
        self.passes = CaptchaPasses(_subkey(key, "pass"), store, clock)
        self.challenges = Challenges(_subkey(key, "altcha"), store, clock)
        self.known = KnownNetworks()

    async def shutdown(self) -> None:
        self.geo.close()

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.policy()
        rule = policy.login
        if ex.request.method != rule.method or ex.path.path != rule.path or not policy.captcha.when:
            return None
        user = await self._username(ex, policy)
        if user is None:
            return None  # not a readable login: the interceptor refuses it with 400, unforwarded
        reason = await self.reason(ex.client_ip, user, policy)
        if reason is None:
            return None
        if await self.lockouts.current(user, ex.client_ip) is not None:
            return None  # the interceptor answers 429; a captcha would change nothing
        token = cookie_value(ex.request.headers.get("Cookie"), PASS_COOKIE)
        if await self.passes.redeem(token, ex.client_ip, policy.captcha.pass_uses):
            ex.notes["captcha"] = f"passed: {reason}"
            return None
        ex.user = user
        ex.deny("challenged", f"captcha required: {reason}")
        log.info("captcha required", user=user, ip=ex.client_ip, reason=reason, had_pass=bool(token))
        return self._challenge(ex, policy, reason)

    async def reason(self, ip: str, user: str | None, policy: Policy) -> str | None:
        """Why a login from `ip` as `user` needs a captcha under `policy`, or None."""
        rules = policy.captcha
        when = rules.when
        if "always" in when:
            return "always"
        if any(flag in when for flag, _, _ in GEO_FLAGS):
            info = self.geo.lookup(ip)
            for flag, attribute, label in GEO_FLAGS:
                if flag in when and getattr(info, attribute):
                    return label
        if "unknown_network" in when and not self.known.contains(ip, policy):
            return "unknown network"
        if "after_failures" in when:
            failures = await self.lockouts.most_failures(user, ip)  # per user and per network
            if failures >= rules.after_failures:
                return f"{failures} failed attempts"
        return None

    # -- helpers -------------------------------------------------------------------------

    async def _username(self, ex: Exchange, policy: Policy) -> str | None:
        """The normalised username, or None when the request is not a readable login
        (the login interceptor then refuses it with 400)."""
        try:
            credentials, _ = await read_login(ex, policy.login)  # the interceptor's own reading
            return self.users.normalise(credentials.username)
        except (AmbiguousCredentials, ValueError):
            return None

    def _challenge(self, ex: Exchange, policy: Policy, reason: str) -> web.StreamResponse:
        target = f"{CAPTCHA_PATH}?next={quote(_login_page(ex, policy), safe='')}"
        if policy.login.format == "json" or wants_json(ex.request):
            response: web.StreamResponse = web.json_response(
                {"error": "captcha_required", "reason": reason, "captcha": target}, status=403
            )
        else:
            response = see_other(target)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Request-Id"] = ex.request_id
        return response


def _login_page(ex: Exchange, policy: Policy) -> str:
    """Where the browser returns after the captcha: the page the login form was on (its
    same-site Referer), else the login path with the request's query."""
    referer = ex.request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}" == ex.public_origin:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if is_local_target(target) and not target.startswith("/_gateway/"):
                return target
    return policy.login.path + (f"?{ex.query}" if ex.query else "")


def local_next(value: str | None, policy: Policy) -> str:
    """A validated local `next` target (never another site), else the login path."""
    if value and is_local_target(value) and len(value) <= 2048:
        return quote(value, safe="/?&=%#:+,;@!$'()*~")
    return policy.login.path
