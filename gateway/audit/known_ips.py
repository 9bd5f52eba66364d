"""Known IPs: the addresses each user has signed in from, so a new one can raise an alert.

IPv4 addresses are kept as they are; IPv6 addresses are grouped by `known_ips.ipv6_prefix`
(a /64 is one household or office: privacy extensions rotate the rest hourly). An entry
counts as known until `known_ips.keep_for` after its last successful sign-in. Forgetting
one is an operator action (the console's `forget_known_ip` permission, or the command
line on the gateway host) and is recorded in the audit trail.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.sql import insert_or_ignore, write_transaction
from gateway.db import Database, known_ips, users
from gateway.policy.schema import Policy
from gateway.risk.geoip import GeoInfo
from gateway.risk.networks import network_key


@dataclass(frozen=True, slots=True)
class KnownIp:
    user: str
    ip_prefix: str
    first_seen: datetime
    last_seen: datetime
    country: str | None
    city: str | None


def ip_prefix(ip: str, ipv6_prefix: int) -> str:
    """What a known-IP entry stores for `ip`: the IPv4 address or the IPv6 network, the
    same key lockouts and captcha triggers count by (gateway.risk.networks)."""
    return network_key(ip, ipv6_prefix)


async def is_known(conn: AsyncConnection, user_id: int, prefix: str, now: datetime, keep_for: float) -> bool:
    """Whether `prefix` is a known address of the user at `now` (used within `keep_for`).
    Whether a login is the user's first is the login history's question, not this table's:
    a user whose addresses all expired still has a history (`gateway.audit.logins`)."""
    fresh = now - timedelta(seconds=keep_for)
    statement = select(known_ips.c.ip_prefix).where(
        known_ips.c.user_id == user_id, known_ips.c.ip_prefix == prefix, known_ips.c.last_seen >= fresh
    )
    return (await conn.execute(statement)).first() is not None


async def remember(
    conn: AsyncConnection, user_id: int, prefix: str, geo: GeoInfo, now: datetime, *, was_known: bool
) -> None:
    """Record a successful sign-in from `prefix`; a stale entry starts over (first_seen)."""
    values = {"last_seen": now, "country": geo.country, "city": geo.city}
    if not was_known:
        values["first_seen"] = now
    await conn.execute(
        insert_or_ignore(conn.dialect.name, known_ips, ["user_id", "ip_prefix"]),
        [{"user_id": user_id, "ip_prefix": prefix, "first_seen": now, **values}],
    )
    await conn.execute(
        update(known_ips).where(known_ips.c.user_id == user_id, known_ips.c.ip_prefix == prefix).values(**values)
    )


async def list_known(database: Database, keep_for: float, now: datetime, user: str | None = None) -> list[KnownIp]:
    """The entries still known at `now`: one past `keep_for` no longer counts for alerts,
    so it is not listed either, whether or not a purge has deleted it yet."""
    statement = (
        select(users.c.name, known_ips)
        .join(users, users.c.id == known_ips.c.user_id)
        .where(known_ips.c.last_seen >= now - timedelta(seconds=keep_for))
        .order_by(users.c.name, known_ips.c.last_seen.desc())
    )
    if user is not None:
        statement = statement.where(users.c.name == user)
    async with database.connect() as conn:
        rows = await conn.execute(statement)
        return [KnownIp(r.name, r.ip_prefix, r.first_seen, r.last_seen, r.country, r.city) for r in rows]


async def forget(database: Database, user: str, ip: str, policy: Policy) -> list[str]:
    """Delete the user's entry for `ip` (or its IPv6 network); returns the prefixes removed."""
    prefix = ip_prefix(ip, policy.known_ips.ipv6_prefix) if "/" not in ip else str(ipaddress.ip_network(ip, strict=False))
    async with write_transaction(database) as conn:
        user_id = (await conn.execute(select(users.c.id).where(users.c.name == user))).scalar()
        if user_id is None:
            return []
        result = await conn.execute(
            delete(known_ips).where(known_ips.c.user_id == user_id, known_ips.c.ip_prefix == prefix)
        )
    return [prefix] if result.rowcount else []
