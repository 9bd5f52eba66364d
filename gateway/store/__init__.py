"""Ephemeral state (sessions, vault, counters, lockouts, replay cache) and broadcast.

`create_store(config.ephemeral_url)` picks the backend: in-process memory when no URL is
configured (one process only), Redis as soon as several workers or hosts must share it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import EphemeralStore, Handler, Subscription
from .memory import MemoryStore

__all__ = ["EphemeralStore", "Handler", "MemoryStore", "Subscription", "create_store"]

_REDIS_SCHEMES = {"redis", "rediss", "unix"}


def create_store(url: str | None, *, prefix: str | None = None) -> EphemeralStore:
    """Build the store named by `url`: None, "" or "memory://" for memory; "redis://",
    "rediss://" or "unix://" for Redis. The Redis key prefix comes from `prefix`, else a
    `?prefix=` query parameter (so it fits in one config value), else "gw:".
    Nothing connects here; the first operation does."""
    if not url or url == "memory://":
        return MemoryStore()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _REDIS_SCHEMES:
        # The URL may hold a password: name only the scheme.
        raise ValueError(f"unsupported ephemeral store URL scheme {scheme + '://'!r}; "
                         "use memory:// or redis://")
    from .redis import DEFAULT_PREFIX, RedisStore

    query = parse_qsl(parts.query, keep_blank_values=True)
    url_prefix = [v for k, v in query if k == "prefix"]
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    clean = urlunsplit(parts._replace(query=rest))
    chosen = prefix if prefix is not None else (url_prefix[-1] if url_prefix else DEFAULT_PREFIX)
    return RedisStore.from_url(clean, prefix=chosen)
