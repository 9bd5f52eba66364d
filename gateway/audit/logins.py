"""Login history: the contract between the login code and everything that follows a login.

The login code calls `await history.record(LoginAttempt(...))` after every attempt, with
the outcome; this module writes `login_history`, keeps the user's known IPs current
(successful logins only) and raises the alerts the policy asks for (new address, lockout,
every login). It answers with a `LoginRecord` saying whether the address was new and
where it is, for the login code to show or act on. Where the background RDAP lookup of
the address (`gateway.risk.rdap`) has already found its network's owner, the record and
the new-address alert name it; the login never waits for one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import structlog
from sqlalchemy import and_, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit import known_ips
from gateway.audit.sql import insert_or_ignore, write_transaction
from gateway.db import Database, login_history, users
from gateway.notify.alerter import Alerter
from gateway.policy.schema import Policy
from gateway.risk.geoip import UNKNOWN, GeoInfo, GeoLocator
from gateway.risk.rdap import cached_names
from gateway.sessions.model import device_label
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.audit.logins")

Outcome = Literal["success", "failure", "locked_out", "refused", "second_factor_failed", "enrolled"]


@dataclass
class LoginAttempt:
    username: str  # normalised
    ip: str
    outcome: Outcome
    login_type: str | None  # "password+totp" | "password+security_key" | "recovery_code" | "remembered_device" | "support_access"
    device_id: str | None = None
    reason: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class LoginRecord:
    id: int
    username: str
    ip: str
    outcome: str
    at: datetime
    new_ip: bool  # no known-IP entry for this address (or its IPv6 network) before this attempt
    first_login: bool  # the user had never signed in (no successful login in the history)
    country: str | None
    city: str | None
    asn: int | None
    alerted: bool  # an alert was queued for this attempt
    owner: str | None = None  # the network's owner by RDAP, if the background lookup had finished


class LoginHistory:
    def __init__(
        self,
        database: Database,
        geo: GeoLocator | None,
        policy: Callable[[], Policy],
        alerter: Alerter | None = None,
        clock: Callable[[], float] = time.time,
        store: EphemeralStore | None = None,
    ) -> None:
        self.database = database
        self.geo = geo
        self.policy = policy
        self.alerter = alerter
        self.clock = clock
        self.store = store  # where the background RDAP lookups leave what they found

    async def _owner(self, ip: str, policy: Policy) -> str | None:
        """The network owner RDAP named for `ip` (network name, then registrants), if a
        lookup has finished by now: read from the cache, never waited for or started here."""
        if self.store is None or not policy.risk.rdap:
            return None
        try:
            names = await cached_names(self.store, ip, policy)
        except Exception:  # the store is down: the login is recorded without an owner, not lost
            log.warning("RDAP owner not readable", ip=ip)
            return None
        return ", ".join(names)[:255] if names else None

    async def record(self, attempt: LoginAttempt) -> LoginRecord:
        policy = self.policy()
        geo: GeoInfo = self.geo.lookup(attempt.ip) if self.geo is not None else UNKNOWN
        now = datetime.fromtimestamp(self.clock(), UTC)
        prefix = known_ips.ip_prefix(attempt.ip, policy.known_ips.ipv6_prefix)
        success = attempt.outcome == "success"
        owner = await self._owner(attempt.ip, policy)
        known = had_any = False
        async with write_transaction(self.database) as conn:
            user_id = await _user_id(conn, attempt.username, create=success, now=now)
            if user_id is not None:
                known = await known_ips.is_known(conn, user_id, prefix, now, policy.known_ips.keep_for)
                had_any = await _has_signed_in(conn, attempt.username)
                if success:
                    await known_ips.remember(conn, user_id, prefix, geo, now, was_known=known)
            result = await conn.execute(
                insert(login_history).values(
                    user_id=user_id, username=attempt.username[:255], at=now, ip=attempt.ip[:64],
                    country=geo.country, city=geo.city, asn=geo.asn, outcome=attempt.outcome,
                    login_type=(attempt.login_type or "none")[:32], device_id=device_label(attempt.device_id),
                    new_ip=not known, reason=(attempt.reason or None) and attempt.reason[:255], owner=owner,
                )
            )
            row_id = int(result.inserted_primary_key[0])
        alerted = await self._alert(attempt, geo, new_ip=not known, first_login=not had_any, policy=policy,
                                    owner=owner)
        return LoginRecord(
            id=row_id, username=attempt.username, ip=attempt.ip, outcome=attempt.outcome, at=now,
            new_ip=not known, first_login=not had_any, country=geo.country, city=geo.city, asn=geo.asn,
            alerted=alerted, owner=owner,
        )

    async def _alert(self, attempt: LoginAttempt, geo: GeoInfo, *, new_ip: bool, first_login: bool,
                     policy: Policy, owner: str | None) -> bool:
        if self.alerter is None:
            return False
        try:
            if attempt.outcome == "locked_out":
                return await self.alerter.lockout(attempt.username, attempt.ip, attempt.reason, geo)
            if attempt.outcome != "success":
                return False
            if new_ip and (not first_login or policy.alerts.new_ip_on_first_login):
                if await self.alerter.new_ip_login(attempt.username, attempt.ip, geo, attempt.login_type, owner):
                    return True
            return await self.alerter.login(attempt.username, attempt.ip, geo, attempt.login_type)
        except Exception:
            log.exception("login alert failed", user=attempt.username)
            return False


async def _user_id(conn: AsyncConnection, name: str, *, create: bool, now: datetime) -> int | None:
    """The user's id; created on a first successful login (failures never create users,
    or anyone could fill the table)."""
    statement = select(users.c.id).where(users.c.name == name)
    user_id = (await conn.execute(statement)).scalar()
    if user_id is None and create:
        await conn.execute(
            insert_or_ignore(conn.dialect.name, users, ["name"]),
            [{"name": name, "active": True, "created_at": now, "updated_at": now}],
        )
        user_id = (await conn.execute(statement)).scalar()
    return None if user_id is None else int(user_id)


async def _has_signed_in(conn: AsyncConnection, name: str) -> bool:
    """Whether the history holds a successful login of `name`. This, not "has a known
    address", is what makes a login the first: when every known address has expired
    (`known_ips.keep_for`), the next login is from a new address, and alerts as one."""
    statement = select(login_history.c.id).where(
        login_history.c.username == name[:255], login_history.c.outcome == "success"
    ).limit(1)
    return (await conn.execute(statement)).first() is not None


async def recent_logins(
    database: Database, user: str | None = None, limit: int = 100, *, ip: str | None = None,
    since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
    new_ip: bool | None = None, offset: int = 0, before: int | None = None,
) -> list[dict[str, object]]:
    """Newest first, for `pms-gateway logins` and the console (indexed by user, by (ip, at), by at).
    `before` resumes after that row in this order (keyset paging: no OFFSET rows read and
    thrown away)."""
    c = login_history.c
    statement = select(login_history).order_by(c.at.desc(), c.id.desc()).limit(limit).offset(offset)
    if before is not None:
        after = select(c.at).where(c.id == before).scalar_subquery()
        statement = statement.where(or_(c.at < after, and_(c.at == after, c.id < before)))
    for column, value in ((c.username, user), (c.ip, ip), (c.outcome, outcome), (c.new_ip, new_ip)):
        if value is not None:
            statement = statement.where(column == value)
    if since is not None:
        statement = statement.where(c.at >= since)
    if until is not None:
        statement = statement.where(c.at < until)
    async with database.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(statement)]
