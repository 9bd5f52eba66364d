"""Telling a dependency outage from a bug, so the answer is 503 and not a generic 500.

When Redis (sessions, pending logins, lockouts) or the database (users, second factors,
known addresses) stops answering, every feature that needs it raises its driver's own
error. The proxy core catches them here in one place: the browser gets a fast 503 page
saying the sign-in service is unavailable, the audit record says `error` with that
status, and the logs name the dependency. Bounded timeouts on the clients themselves
(see `gateway.store.redis` and `gateway.db.engine`) keep "fast" true when a dependency
hangs rather than refuses.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

try:  # asyncpg is optional at run time (SQLite deployments)
    from asyncpg.exceptions import ConnectionDoesNotExistError, InterfaceError, PostgresConnectionError

    _ASYNCPG: tuple[type[BaseException], ...] = (ConnectionDoesNotExistError, InterfaceError, PostgresConnectionError)
except ImportError:  # pragma: no cover - asyncpg is a declared dependency
    _ASYNCPG = ()

_STORE_ERRORS = (RedisConnectionError, RedisTimeoutError)
_DATABASE_ERRORS = (DisconnectionError, PoolTimeoutError, *_ASYNCPG)
_NETWORK_ERRORS = (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)


def outage_of(exc: BaseException) -> str | None:
    """The dependency whose outage `exc` is ("session store", "database"), or None for
    anything else (a bug, which stays a 500). Follows `__cause__`/`__context__` because
    SQLAlchemy and redis-py wrap the socket error they met."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _STORE_ERRORS):
            return "session store"
        if isinstance(current, DBAPIError) and (current.connection_invalidated or _is_network(current.orig)):
            return "database"
        if isinstance(current, _DATABASE_ERRORS):
            return "database"
        if isinstance(current, _NETWORK_ERRORS) and (raised_in := _driver_of(current)):
            return raised_in
        current = current.__cause__ or current.__context__
    return None


def _is_network(error: BaseException | None) -> bool:
    return isinstance(error, _NETWORK_ERRORS + _ASYNCPG)


_DRIVERS = {"asyncpg": "database", "aiosqlite": "database", "sqlalchemy": "database", "redis": "session store"}


def _driver_of(error: BaseException) -> str | None:
    """A bare socket error (asyncpg raises `ConnectionRefusedError` unwrapped when it
    connects) belongs to the driver whose code it was raised in."""
    traceback = error.__traceback__
    found = None
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        found = _DRIVERS.get(module.partition(".")[0], found)
        traceback = traceback.tb_next
    return found
