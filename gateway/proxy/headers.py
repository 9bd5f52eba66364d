"""Header hygiene between browser, gateway and upstream.

Hop-by-hop headers belong to one connection and are dropped in both directions; the
client's own forwarding headers are replaced by the gateway's (a browser must not be able
to claim another IP); absolute URLs and cookie domains naming the upstream are rewritten
to the public host so the PMS's address never leaks and links keep working.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy

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
CLIENT_FORWARDING = frozenset(
    {"expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded", "x-real-ip"}
)


_UPSTREAM_DROP = HOP_BY_HOP | CLIENT_FORWARDING


def _drop_set(headers: CIMultiDictProxy[str] | CIMultiDict[str], base: frozenset[str]) -> frozenset[str]:
    """`base`, plus the headers a `Connection` header names as hop-by-hop (rarely any)."""
    values = headers.getall("Connection", ())
    if not values:
        return base
    tokens = {t.strip().lower() for value in values for t in value.split(",") if t.strip()}
    return base | tokens


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    client_ip: str,
    scheme: str,
    public_host: str,
    request_id: str,
) -> CIMultiDict[str]:
    """Headers to send up: the browser's, minus hop-by-hop and forged forwarding headers."""
    drop = _drop_set(incoming, _UPSTREAM_DROP)
    headers = CIMultiDict((k, v) for k, v in incoming.items() if k.lower() not in drop)
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
