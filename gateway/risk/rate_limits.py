"""Rate limits (`rate_limits:` in the policy), counted by the `limits` library.

Counters live where the ephemeral store lives: on its Redis (same connection pool, same
key prefix, so every worker and host of one deployment counts together, and an outage is
the 503 every Redis outage is) or, with the memory store, in this process. A request past
a rule gets 429 with `Retry-After` and the translated "rate limited" page (JSON for
scripts), audited with decision `rate_limited`.

Who is asking is known at different moments, so the rules are enforced at three points
that share one `RateLimiter`:

- `RateLimits(limiter, ADDRESS)` first among the guards: per address, before any work
  (a login flood is refused before its body is read or a user looked up);
- `RateLimits(limiter, IDENTITY)` after the login interceptor and the session guard:
  per user (the session's, or the username a login tries), session or API client;
- `GatewayPageLimits(limiter)`: the gateway's own pages (`/_gateway/2fa`, the captcha)
  are not exchanges, so an aiohttp middleware counts them, per address, on the route
  they reached (however its path was spelt).

A request under several rules is counted by each in turn and refused by the first one
spent (counts taken by earlier rules stay taken, as with any burst).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import limits
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter as Strategy

from gateway.audit.path_secrets import path_for_logs
from gateway.policy.rate_limits import RateKey, RateLimitRule
from gateway.policy.schema import Policy
from gateway.policy.types import method_listed
from gateway.proxy.errors import error_response
from gateway.proxy.exchange import CLIENT, REQUEST_ID, Addon, Exchange
from gateway.proxy.server import RESERVED_PREFIX
from gateway.risk.networks import client_key
from gateway.store.base import EphemeralStore
from gateway.store.redis import RedisStore

log = structlog.get_logger("gateway.risk")

ADDRESS: frozenset[RateKey] = frozenset({"address"})
IDENTITY: frozenset[RateKey] = frozenset({"user", "session", "api_client"})
DECISION = "rate_limited"
# Set on a gateway page's request when it was refused, so the audit record says why.
_REFUSED = web.RequestKey("rate_limit_refused", str)


def storage_for(store: EphemeralStore) -> Storage:
    """Counters beside the ephemeral store: its Redis pool and prefix, or this process."""
    if isinstance(store, RedisStore):
        return RedisStorage(
            "async+redis://",  # the pool below says where; the URI is only parsed
            implementation="redispy",
            key_prefix=store.prefix + "ratelimit",
            connection_pool=store.client.connection_pool,
        )
    return MemoryStorage()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request one rule refused, and when that rule lets the key in again."""

    rule: RateLimitRule
    retry_after: int  # whole seconds, at least 1

    @property
    def reason(self) -> str:
        return f"rate limit {describe_rule(self.rule)}"


def describe_rule(rule: RateLimitRule) -> str:
    """`10/minute per address (moving-window) on login form`: how refusals and
    `policy explain` name a rule."""
    target = "login form" if rule.login else "password reset request" if rule.password_reset else rule.path
    return f"{rule.rate} per {rule.key} ({rule.strategy}) on {target}"


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: RateLimitRule
    item: limits.RateLimitItem
    pattern: re.Pattern[str] | None
    ident: str  # stable across workers and reloads while the rule is unchanged

    def applies(self, method: str, path: str, policy: Policy) -> bool:
        if self.rule.login:
            return policy.login.is_login_request(path, method)
        if self.rule.password_reset:
            return policy.login.is_reset_request(path, method)
        assert self.pattern is not None
        return method_listed(method, self.rule.methods) and self.pattern.search(path) is not None


def _compile(rule: RateLimitRule) -> _Compiled:
    return _Compiled(
        rule,
        limits.parse(rule.rate),
        re.compile(rule.path) if rule.path is not None else None,
        hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:16],  # same rule, same counters
    )


def _applying(
    rules: Iterable[_Compiled], method: str, path: str, policy: Policy, kinds: frozenset[RateKey]
) -> Iterator[_Compiled]:
    """The rules of `kinds` a request falls under, in policy order."""
    return (c for c in rules if c.rule.key in kinds and c.applies(method, path, policy))


def matching_rules(policy: Policy, method: str, path: str, kinds: frozenset[RateKey]) -> list[RateLimitRule]:
    """The `rate_limits:` rules of `kinds` that count a request (for `policy explain`;
    the limiter decides by the same `_applying`)."""
    return [c.rule for c in _applying(map(_compile, policy.rate_limits), method, path, policy, kinds)]


def _digest(value: str) -> str:
    """Key values (usernames, addresses) stored as digests: fixed length, no separators."""
    return hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


class RateLimiter:
    """The policy's rules over one `limits` storage, shared by every enforcement point."""

    def __init__(self, policy: Callable[[], Policy], storage: Storage) -> None:
        self.policy = policy
        self.storage = storage
        self._strategies: dict[str, Strategy] = {
            "moving-window": MovingWindowRateLimiter(storage),
            "fixed-window": FixedWindowRateLimiter(storage),
        }
        self._compiled: tuple[Policy | None, tuple[_Compiled, ...]] = (None, ())

    def _rules(self, policy: Policy) -> tuple[_Compiled, ...]:
        """Compiled once per policy object (a reload replaces the object)."""
        if self._compiled[0] is not policy:
            self._compiled = (policy, tuple(_compile(rule) for rule in policy.rate_limits))
        return self._compiled[1]

    async def check_rule(self, rule: RateLimitRule, value: str) -> Refusal | None:
        """Count one request of `value` under a rule a feature owns rather than
        `rate_limits:` (an API client's `rate_limit`), on the same counters."""
        return await self._hit(_compile(rule), value)

    async def _hit(self, compiled: _Compiled, value: str) -> Refusal | None:
        rule = compiled.rule
        strategy = self._strategies[rule.strategy]
        identifiers = (compiled.ident, rule.key, _digest(value))
        if await strategy.hit(compiled.item, *identifiers):
            return None
        reset, _ = await strategy.get_window_stats(compiled.item, *identifiers)
        # `limits` reads time.time() too, so this difference is on its own clock.
        return Refusal(rule, max(1, math.ceil(reset - time.time())))

    async def check(
        self, method: str, path: str, keys: dict[RateKey, str | None], kinds: frozenset[RateKey]
    ) -> Refusal | None:
        """Count this request under every rule of `kinds` it falls under; the first rule
        already spent refuses it. A rule whose key the request lacks does not count it."""
        policy = self.policy()
        for compiled in _applying(self._rules(policy), method, path, policy, kinds):
            value = keys.get(compiled.rule.key)
            if value is None:
                continue
            if (refusal := await self._hit(compiled, value)) is not None:
                return refusal
        return None

    async def close(self) -> None:
        timer = getattr(self.storage, "timer", None)  # MemoryStorage's expiry task
        if timer is not None and not timer.done():
            timer.cancel()


def refusal_response(request: web.BaseRequest, request_id: str, policy: Policy, refusal: Refusal) -> web.Response:
    log.info("rate limited", request_id=request_id, path=path_for_logs(request.path, policy.audit.path_secrets),
             reason=refusal.reason)
    response = error_response(
        request, 429, request_id, policy.property, key="rate_limited",
        values={"seconds": str(refusal.retry_after)},
    )
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def _exchange_keys(ex: Exchange, policy: Policy) -> dict[RateKey, str | None]:
    login = ex.notes.get("login")  # the login interceptor's reading of the form
    user = getattr(login, "user", None) or ex.user
    api_client = user[4:] if user is not None and user.startswith("api:") else None
    return {
        "address": client_key(ex.client_ip, policy),
        "user": None if api_client is not None else user,
        "session": ex.session_hash,
        "api_client": api_client,
    }


class RateLimits(Addon):
    """The rules of `kinds` on exchanges (requests for the PMS), as a request guard."""

    def __init__(self, limiter: RateLimiter, kinds: frozenset[RateKey]) -> None:
        self.limiter = limiter
        self.kinds = kinds

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.limiter.policy()
        keys = _exchange_keys(ex, policy)
        refusal = await self.limiter.check(ex.request.method, ex.path.path, keys, self.kinds)
        if refusal is None:
            return None
        ex.deny(DECISION, refusal.reason)
        return refusal_response(ex.request, ex.request_id, policy, refusal)


class GatewayPageLimits(Addon):
    """Address rules on the gateway's own pages, as a middleware (they are no exchanges).

    Rules match the path of the route the request reached, so `/_gateway/%32fa` counts as
    `/_gateway/2fa`. The audit record of a refused page says `rate_limited` (set in `done`,
    which runs before the audit recorder's)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def middlewares(self) -> list[Middleware]:
        return [self._guard]

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else ""
        if not path.startswith(RESERVED_PREFIX):
            return await handler(request)
        policy = self.limiter.policy()
        keys: dict[RateKey, str | None] = {"address": client_key(request[CLIENT].ip, policy)}
        refusal = await self.limiter.check(request.method, path, keys, ADDRESS)
        if refusal is None:
            return await handler(request)
        request[_REFUSED] = refusal.reason
        return refusal_response(request, request[REQUEST_ID], policy, refusal)

    async def done(self, ex: Exchange) -> None:
        reason = ex.request.get(_REFUSED)
        if reason is not None:
            ex.deny(DECISION, reason)
