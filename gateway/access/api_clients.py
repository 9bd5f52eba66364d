"""API clients (`api_clients:`): integrations that call the PMS's API without a person.

A channel manager or a door-lock system cannot do a second factor. Rather than make the
API public, each integration is declared by name with its paths, methods, mandatory
source networks and a rate limit, and recognised by

- `gateway_token`: a token the gateway issued (`pms-gateway api-clients add NAME`), sent
  in a header only. The gateway strips it; where the PMS needs its own credential, the one
  stored (encrypted) for the client is injected instead;
- `header_pattern`: the PMS's own token, recognised by a header matching a pattern, from
  the client's networks only. Staff who can mint PMS tokens for themselves could use one
  to skip the second factor, which is why the networks are mandatory.

A recognised request is judged as the client's, never as a person's: no session, no
captcha, no CSRF check, no vaulted cookies (the browser's `Cookie` header is dropped),
audited as `api:<name>`. A request that presents a token that is not valid, or comes from
elsewhere, is answered 401/403 in JSON. A request to an API path that presents nothing is
left to the session guard, which answers it 401 JSON unless it carries a live session. A
gateway token in a query string is refused (URLs end up in logs, histories, Referers).

This guard runs before the CSRF check and the session guard, which skip what it marked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote_plus

import structlog
from aiohttp import web

from gateway.access.api_tokens import TOKEN_PREFIX, ApiTokens, looks_like_api_token
from gateway.audit.capture import AREA_NOTE
from gateway.policy.areas import CompiledClient
from gateway.policy.rate_limits import RateLimitRule
from gateway.policy.schema import Policy
from gateway.proxy.exchange import Addon, Exchange
from gateway.risk.rate_limits import DECISION as RATE_LIMITED, RateLimiter

log = structlog.get_logger("gateway.access")

API_CLIENT_NOTE = "api_client"
"""`Exchange.notes` key set on a request recognised as an API client's (its name)."""


def is_api_request(ex: Exchange) -> bool:
    """For the guards an API client skips (CSRF, sessions)."""
    return API_CLIENT_NOTE in ex.notes


def api_refusal(ex: Exchange, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """API clients are programs: every refusal is JSON, whatever they `Accept`."""
    return web.json_response(
        {"error": error, "detail": detail, "request_id": ex.request_id},
        status=status, headers={"X-Request-Id": ex.request_id, **(headers or {})},
    )


class ApiClients(Addon):
    def __init__(self, policy: Callable[[], Policy], tokens: ApiTokens, limiter: RateLimiter) -> None:
        self.policy = policy
        self.tokens = tokens
        self.limiter = limiter
        self._limits: dict[str, RateLimitRule] = {}

    async def request(self, ex: Exchange) -> web.StreamResponse | None:
        policy = self.policy()
        clients = policy.areas.clients
        if not clients:
            return None
        if TOKEN_PREFIX in unquote_plus(ex.query):
            ex.query = ""  # the audit trail never keeps it, whatever `query_values` says
            ex.deny("refused", "API token in the query string")
            return api_refusal(ex, 400, "token_in_query", "send the API token in a header, never in the URL")
        token = self._gateway_token(ex, clients)
        if token is not None:
            return await self._by_token(ex, clients, *token)
        for client in clients.values():
            if client.header_pattern is None or not client.allows_request(ex.request.method, ex.path.path):
                continue
            values = ex.request.headers.getall(client.rule.header or "", [])
            if not any(client.header_pattern.fullmatch(value) for value in values):
                continue
            if len(values) > 1:
                # The PMS may read the other one (the last, or both joined): a person's own
                # credentials would ride on the client's recognition.
                ex.deny("refused", f"API client header {client.rule.header} sent more than once")
                return api_refusal(ex, 400, "ambiguous_credentials", f"send {client.rule.header} once")
            return await self._admit(ex, client, strip_header=None)
        return None

    @staticmethod
    def _gateway_token(ex: Exchange, clients: dict[str, CompiledClient]) -> tuple[str, str] | None:
        """(token, header it came in) when a request presents a gateway token in any
        header a `gateway_token` client reads (so a mistyped one is refused, not forwarded)."""
        headers = ex.request.headers
        for name in {c.rule.token_header for c in clients.values() if c.rule.recognition == "gateway_token"}:
            for value in headers.getall(name, []):
                value = value.strip()
                if name.lower() == "authorization":
                    scheme, _, value = value.partition(" ")
                    if scheme.lower() != "bearer":
                        continue
                    value = value.strip()
                if looks_like_api_token(value):
                    return value, name
        return None

    async def _by_token(
        self, ex: Exchange, clients: dict[str, CompiledClient], token: str, header: str
    ) -> web.StreamResponse | None:
        info = await self.tokens.lookup(token)
        if info is not None:
            ex.user = "api:" + info.client  # a refused token is still on record under its client
        client = clients.get(info.client) if info is not None else None
        if info is None or not info.valid_at(datetime.now(UTC)):
            ex.deny("refused", "API token unknown, expired or revoked")
            return api_refusal(ex, 401, "invalid_token", "unknown, expired or revoked API token",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if client is None or client.rule.recognition != "gateway_token" or client.rule.token_header != header:
            ex.deny("refused", "API token of a client the policy does not declare (here)")
            return api_refusal(ex, 401, "invalid_token", "this token's client is not declared for this header",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return await self._admit(ex, client, strip_header=header)

    async def _admit(self, ex: Exchange, client: CompiledClient, strip_header: str | None) -> web.StreamResponse | None:
        name = client.name
        ex.user = "api:" + name
        ex.notes[AREA_NOTE] = "api client"
        if not client.allows_address(ex.client_ip):
            log.warning("API client from a network not allowed", client=name, ip=ex.client_ip)
            ex.deny("refused", "API client from a network it is not allowed")
            return api_refusal(ex, 403, "network_not_allowed", "this client may not call from this address")
        if not client.allows_request(ex.request.method, ex.path.path):
            ex.deny("refused", "API client outside its paths or methods")
            return api_refusal(ex, 403, "not_allowed", "this client may not use this path or method")
        refusal = await self.limiter.check_rule(self._limit_rule(client), name)
        if refusal is not None:
            ex.deny(RATE_LIMITED, refusal.reason)
            return api_refusal(ex, 429, "rate_limited", f"at most {client.rule.rate_limit}",
                               {"Retry-After": str(refusal.retry_after)})
        ex.notes[API_CLIENT_NOTE] = name
        upstream = ex.upstream_headers
        upstream.popall("Cookie", None)  # never a browser's cookies, never vaulted ones
        if strip_header is not None:
            upstream.popall(strip_header, None)
            credential = await self.tokens.upstream_credential(name)
            if credential is not None:
                upstream[credential.header] = credential.value
        return None

    def _limit_rule(self, client: CompiledClient) -> RateLimitRule:
        """The client's `rate_limit` as a rule of the shared rate limiter, keyed by its name."""
        rule = self._limits.get(client.name)
        if rule is None or rule.rate != client.rule.rate_limit:
            rule = RateLimitRule(path=client.paths.pattern, key="api_client", rate=client.rule.rate_limit)
            self._limits[client.name] = rule
        return rule
