"""Header hygiene between browser, gateway and upstream.

Hop-by-hop headers belong to one connection and are dropped in both directions; the
client's own forwarding headers, the whole family every framework reads as the client's
address, scheme or host, are replaced by the gateway's (a browser must not be able to
claim another IP); a request header whose name contains `_` is dropped (nginx's default:
WSGI/CGI map `X_Forwarded_For` and `X-Forwarded-For` to one variable, so the PMS would
read what the gateway never judged); absolute URLs and cookie domains naming the upstream are rewritten
to the public host so the PMS's address never leaks and links keep working.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.overrides import OVERRIDE_HEADERS

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Expect is answered by the gateway itself; forwarding it would make the PMS answer twice.
# The rest is the forwarding family: headers some framework, CDN or load balancer reads as
# the client's address, scheme, host or port. Every `X-Forwarded*` name is in it too.
CLIENT_FORWARDING = frozenset(
    {
        "expect",
        "forwarded",
        "forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "fastly-client-ip",
        "akamai-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-proxyuser-ip",
        "x-envoy-external-address",
        "x-appengine-user-ip",
        "x-azure-clientip",
        "x-host",
        "x-original-host",
        "x-http-host-override",
        "x-url-scheme",
        "x-scheme",
        "front-end-https",
    }
)
_FORWARDING_PREFIX = "x-forwarded"  # -for, -proto, -host, -port, -prefix, -server, -ssl, -scheme...
# Headers the gateway writes itself on the way up: a `Connection` token never removes them.
GATEWAY_SET = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"})


_UPSTREAM_DROP = HOP_BY_HOP | CLIENT_FORWARDING | OVERRIDE_HEADERS  # the PMS routes on what the rules judged


def _drop_set(headers: CIMultiDictProxy[str] | CIMultiDict[str], base: frozenset[str]) -> frozenset[str]:
    """`base`, plus the custom headers a `Connection` header names as hop-by-hop.

    Only an `X-` extension header the gateway does not set may be made hop-by-hop that
    way. A token naming a standard header (`Connection: Host` made the PMS see its
    internal Host; `Cookie`, `Authorization`, `Content-Type`, `Set-Cookie`, `Location`)
    or one the gateway writes (`X-Forwarded-For`, `X-Request-Id`) is ignored, in both
    directions: the header stays the end-to-end header it is.
    """
    values = headers.getall("Connection", ())
    if not values:
        return base
    tokens = {t.strip().lower() for value in values for t in value.split(",")}
    return base | {t for t in tokens if t.startswith("x-") and t not in GATEWAY_SET}


def _client_may_not_send(name: str, drop: frozenset[str]) -> bool:
    lowered = name.lower()
    return lowered in drop or "_" in lowered or lowered.startswith(_FORWARDING_PREFIX)


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    client_ip: str,
    scheme: str,
    public_host: str,
    request_id: str,
) -> CIMultiDict[str]:
    """Headers to send up: the browser's, minus hop-by-hop, forged forwarding headers and
    names with `_`; the forwarding family is then written by the gateway alone."""
    drop = _drop_set(incoming, _UPSTREAM_DROP)
    headers = CIMultiDict((k, v) for k, v in incoming.items() if not _client_may_not_send(k, drop))
    headers["X-Forwarded-For"] = client_ip
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Host"] = public_host
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    headers["Forwarded"] = f"for={node};proto={scheme};host={public_host}"
    headers["X-Request-Id"] = request_id
    return headers


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones (duplicates kept: Set-Cookie)."""
    drop = _drop_set(upstream, HOP_BY_HOP)
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in drop)


class UpstreamRewriter:
    """Rewrites the upstream's origin to the public one in Location and Set-Cookie."""

    def __init__(self, upstream_origin: str, upstream_host: str) -> None:
        self.upstream_origin = upstream_origin.rstrip("/")
        self._domain = re.compile(
            r";\s*domain\s*=\s*\.?" + re.escape(upstream_host) + r"\s*(?=;|$)", re.IGNORECASE
        )

    def rewrite(self, headers: CIMultiDict[str], public_origin: str) -> None:
        location = headers.get("Location")
        if location and location.startswith(self.upstream_origin):
            rest = location[len(self.upstream_origin) :]
            if rest == "" or rest[0] in "/?#":
                headers["Location"] = public_origin + rest
        if "Set-Cookie" in headers:
            cookies = [self._domain.sub("", c) for c in headers.getall("Set-Cookie")]
            del headers["Set-Cookie"]
            for cookie in cookies:
                headers.add("Set-Cookie", cookie)

    def rewrite_referrer_headers(self, headers: CIMultiDict[str], public_origin: str) -> None:
        """For `host_header: upstream`: Origin and Referer must agree with the rewritten Host."""
        origin = headers.get("Origin")
        if origin == public_origin:
            headers["Origin"] = self.upstream_origin
        referer = headers.get("Referer")
        if referer and referer.startswith(public_origin + "/"):
            headers["Referer"] = self.upstream_origin + referer[len(public_origin) :]
