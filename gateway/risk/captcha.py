"""A captcha before the password reaches the PMS, when a login looks risky.

On the login request (policy `login.path` and `login.method`) the gate applies
`captcha.when`: `always`; the client address is an anonymous VPN, a Tor exit, a hosting
provider or a public proxy (`gateway.risk.ownership`: the network list on the GeoLite2-ASN
owner, the Tor exit list, RDAP answers, the paid Anonymous-IP file if any); it lies
outside the known networks (`unknown_network`); or `after_failures` failed attempts in
the lockout window: outside the known networks by the user or the address (spraying from
one address is caught), inside them by the user or the (user, address) pair, so behind
the hotel's one NAT address a colleague's typos captcha nobody else. With
`captcha.on_unknown: captcha`, a public address outside the known networks that nothing
is known about is asked too. Every login from outside the known networks also starts a
background RDAP lookup of its address (`gateway.risk.rdap`) for the next one.

A login that needs a captcha and carries no valid pass is not forwarded: a browser is
sent (303) to `/_gateway/captcha?next=<its login page>` and its form post is held,
encrypted under a key only its cookie has (`gateway.risk.held_login`), to be replayed
once the captcha is solved; a JSON client gets 403 naming that URL. The password never
reaches the PMS before the captcha is solved, and is never readable from the store.

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
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

import altcha
import structlog
from aiohttp import web

from gateway.pages.render import see_other, wants_json
from gateway.policy.schema import CaptchaPolicy, Policy
from gateway.proxy.exchange import Addon, Exchange
from gateway.readers.credentials import AmbiguousCredentials, read_login
from gateway.readers.redirects import is_local_target
from gateway.risk.geoip import GeoLocator
from gateway.risk.lockout import Lockouts
from gateway.risk.held_login import FORM, HOLD_FOR, MAX_HELD, HeldLogins
from gateway.risk.networks import KnownNetworks, client_key
from gateway.risk.ownership import NetworkOwners, Owner, TorExits
from gateway.risk.rdap import RdapLookups, cached_names
from gateway.sessions.cookies import CAPTCHA_COOKIE, HELD_LOGIN_COOKIE, cookie_value, set_cookie
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.captcha")

CAPTCHA_PATH = "/_gateway/captcha"
PASS_COOKIE = CAPTCHA_COOKIE
ALGORITHM = "SHA-256"  # iterated SHA: what browsers compute with crypto.subtle
IMAGE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L look-alikes
IMAGE_LENGTH = 5
ISSUE_WINDOW = 300.0  # seconds
ISSUE_LIMIT = 60  # challenges one address may ask for per window (images cost CPU)

# policy flag -> Owner kind -> reason recorded on the exchange
GEO_FLAGS = (
    ("anonymous_vpn", "vpn", "vpn"),
    ("tor", "tor", "tor"),
    ("hosting_provider", "hosting", "hosting provider"),
    ("public_proxy", "proxy", "public proxy"),
)
REPLAY_FIELDS = frozenset({"altcha", "image_id", "answer", "next"})  # the captcha form, posted again by the 307


def _subkey(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Trigger:
    """One entry of `captcha.when` (or `captcha.on_unknown`) judged for one address."""

    name: str
    fired: bool | None  # None: not judged (its input was not given)
    detail: str  # when it fired: the reason the gate records


@dataclass(frozen=True, slots=True)
class CaptchaVerdict:
    reason: str | None  # the first trigger that fired, as the gate records it; None = no captcha
    triggers: tuple[Trigger, ...]


def needs_owner(rules: CaptchaPolicy) -> bool:
    """Whether `captcha_verdict` reads the address's network owner under these rules."""
    return rules.on_unknown == "captcha" or any(flag in rules.when for flag, _, _ in GEO_FLAGS)


def captcha_verdict(rules: CaptchaPolicy, inside: bool, owner: Owner | None, failures: int | None) -> CaptchaVerdict:
    """The captcha decision from what is known about a login, with no I/O, in the order
    the gate applies `captcha.when`: `always`, the owner's risk kinds, `on_unknown`,
    `unknown_network`, `after_failures`. `inside`: the address is in the known networks;
    `owner`: `NetworkOwners.owner` (None when `needs_owner` is false); `failures`:
    `Lockouts.most_failures` (None = not counted: that trigger is not judged). The gate
    and `pms-gateway policy explain` both decide by it."""
    when = rules.when
    triggers: list[Trigger] = []
    if "always" in when:
        triggers.append(Trigger("always", True, "always"))
    for flag, kind, label in GEO_FLAGS:
        if flag in when:
            hit = owner is not None and kind in owner.kinds
            triggers.append(Trigger(flag, hit, label if hit else f"not {label}"))
    if rules.on_unknown == "captcha":
        hit = owner is not None and not inside and not owner.known
        triggers.append(Trigger("on_unknown", hit, "nothing known about the address" if hit else (
            "inside the known networks" if inside else "the address's owner is known")))
    if "unknown_network" in when:
        triggers.append(Trigger("unknown_network", not inside, "unknown network" if not inside else "inside the known networks"))
    if "after_failures" in when:
        if failures is None:
            triggers.append(Trigger("after_failures", None, f"not counted (captcha after {rules.after_failures} failures)"))
        else:
            hit = failures >= rules.after_failures
            triggers.append(Trigger("after_failures", hit, f"{failures} failed attempts" + ("" if hit else f" (captcha from {rules.after_failures})")))
    reason = next((t.detail for t in triggers if t.fired), None)
    return CaptchaVerdict(reason, tuple(triggers))


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
        *,
        tor: TorExits | None = None,
        rdap: RdapLookups | None = None,
    ) -> None:
        self.policy = policy
        self.users = users
        self.lockouts = lockouts
        self.store = store
        self.geo = geo
        self.owners = NetworkOwners(geo, tor)
        self.rdap = rdap
        self.held = HeldLogins(store)
        self.passes = CaptchaPasses(_subkey(key, "pass"), store, clock)
        self.challenges = Challenges(_subkey(key, "altcha"), store, clock)
        self.known = KnownNetworks()

    async def shutdown(self) -> None:
        if self.rdap is not None:
            await self.rdap.close()
        self.geo.close()

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.policy()
        rule = policy.login
        if not rule.is_login_request(ex.path.path, ex.request.method):
            if rule.password_forms and rule.is_reset_request(ex.path.path, ex.request.method):
                return await self._reset_request(ex, policy)
            return None
        if not policy.captcha.when and policy.captcha.on_unknown == "allow":
            return None
        replayed = await self._replay_held(ex, policy)
        if replayed is False:
            return see_other(_login_page(ex, policy))  # the held login is gone: sign in again
        user = await self._username(ex, policy)
        if user is None:
            return None  # not a readable login: the interceptor refuses it with 400, unforwarded
        if self.rdap is not None and not self.known.contains(ex.client_ip, policy):
            self.rdap.schedule(ex.client_ip)  # background: judged at the next login
        reason = await self.reason(ex.client_ip, user, policy)
        if reason is None:
            return None
        if await self.lockouts.current(user, ex.client_ip) is not None:
            return None  # the interceptor answers 429; a captcha would change nothing
        token = cookie_value(ex.request.headers.get("Cookie"), PASS_COOKIE)
        if await self.passes.redeem(token, ex.client_ip, policy.captcha.pass_uses):
            ex.notes["captcha"] = f"passed: {reason}" + (" (held login replayed)" if replayed else "")
            return None
        ex.user = user
        ex.deny("challenged", f"captcha required: {reason}")
        log.info("captcha required", user=user, ip=ex.client_ip, reason=reason, had_pass=bool(token))
        return await self._challenge(ex, policy, reason)

    async def _reset_request(self, ex: Exchange, policy: Policy) -> web.StreamResponse | None:
        """A form asking for a password-reset link (`request_path` of a `reset` form under
        `login.password_forms`): captcha'd under `captcha.when` like the login, judged by
        the address alone (the gateway does not read whom it names); its body is not held."""
        if not policy.captcha.when and policy.captcha.on_unknown == "allow":
            return None
        reason = await self.reason(ex.client_ip, None, policy)
        if reason is None:
            return None
        token = cookie_value(ex.request.headers.get("Cookie"), PASS_COOKIE)
        if await self.passes.redeem(token, ex.client_ip, policy.captcha.pass_uses):
            ex.notes["captcha"] = f"passed: {reason}"
            return None
        ex.deny("challenged", f"captcha required before a password reset link: {reason}")
        return await self._challenge(ex, policy, reason)

    async def reason(self, ip: str, user: str | None, policy: Policy) -> str | None:
        """Why a login from `ip` as `user` needs a captcha under `policy`, or None."""
        rules = policy.captcha
        if "always" in rules.when:
            return "always"
        owner = await self.owner(ip, policy) if needs_owner(rules) else None
        inside = self.known.contains(ip, policy)
        verdict = captcha_verdict(rules, inside, owner, None)
        if verdict.reason is None and "after_failures" in rules.when:
            failures = await self.lockouts.most_failures(user, ip)  # see Lockouts.most_failures
            verdict = captcha_verdict(rules, inside, owner, failures)
        return verdict.reason

    async def owner(self, ip: str, policy: Policy) -> Owner:
        """Who owns `ip`'s network, from the local sources and a finished RDAP lookup."""
        names = await cached_names(self.store, ip, policy) if policy.risk.rdap else None
        return self.owners.owner(ip, policy, names)

    # -- helpers -------------------------------------------------------------------------

    async def _username(self, ex: Exchange, policy: Policy) -> str | None:
        """The normalised username, or None when the request is not a readable login
        (the login interceptor then refuses it with 400)."""
        try:
            credentials, _ = await read_login(ex, policy.login)  # the interceptor's own reading
            return self.users.normalise(credentials.username)
        except (AmbiguousCredentials, ValueError):
            return None

    async def _replay_held(self, ex: Exchange, policy: Policy) -> bool | None:
        """The captcha page's 307 brings the captcha form back to the login URL with the
        `gw_held` cookie: swap in the held login (True); False when it is gone (expired,
        used, another address); None for any other request, left as it is."""
        cookie = cookie_value(ex.request.headers.get("Cookie"), HELD_LOGIN_COOKIE)
        if cookie is None or _media(ex) != FORM:
            return None
        body = await ex.read_body(MAX_HELD)
        fields = set(parse_qs(body.decode("latin-1"), keep_blank_values=True)) if body is not None else set()
        if not fields or not fields <= REPLAY_FIELDS or not fields & {"altcha", "image_id"}:
            return None  # a login typed again: it goes through as it is
        held = await self.held.take(cookie, client_key(ex.client_ip, policy))
        if held is None:
            return False
        ex.body = held.body
        if "Content-Length" in ex.upstream_headers:
            ex.upstream_headers["Content-Length"] = str(len(held.body))
        log.info("held login replayed after the captcha", ip=ex.client_ip)
        return True

    async def _challenge(self, ex: Exchange, policy: Policy, reason: str) -> web.StreamResponse:
        target = f"{CAPTCHA_PATH}?next={quote(_login_page(ex, policy), safe='')}"
        if policy.login.format == "json" or wants_json(ex.request):
            response: web.StreamResponse = web.json_response(
                {"error": "captcha_required", "reason": reason, "captcha": target}, status=403
            )
        else:
            response = see_other(target)
            held = None
            if _media(ex) == FORM and ex.body is not None:
                held = await self.held.hold(ex.body, ex.query, client_key(ex.client_ip, policy))
            if held is not None:
                response.headers.add("Set-Cookie", set_cookie(
                    HELD_LOGIN_COOKIE, held, secure=ex.scheme == "https", max_age=HOLD_FOR, same_site="Strict"
                ))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Request-Id"] = ex.request_id
        return response


def _media(ex: Exchange) -> str:
    """The request's media type, lower case, without parameters ('' when none)."""
    return ex.request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _login_page(ex: Exchange, policy: Policy) -> str:
    """Where the browser returns after the captcha: the page the login form was on (its
    same-site Referer), else the sign-in page (`login.page`) with the request's query."""
    referer = ex.request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}" == ex.public_origin:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if is_local_target(target) and not target.startswith("/_gateway/"):
                return target
    return policy.login.page_url(ex.query)


def local_next(value: str | None, policy: Policy) -> str:
    """A validated local `next` target (never another site), else the sign-in page."""
    if value and is_local_target(value) and len(value) <= 2048:
        return quote(value, safe="/?&=%#:+,;@!$'()*~")
    return policy.login.page_url()
